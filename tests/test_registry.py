"""The layers and the trainer registry: import directions, and a trainer declared outside the repository (as a
plugin would be) picked up by the protocol scripts, the tables, the benchmark and train.py with no file edited."""
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from trainers import registry
from trainers.coop_model import CoOpCLIP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY_POINTS = ("train.py", "scripts/", "tests/conftest.py")


def python(code, env=None, cwd=ROOT):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_datasets_never_import_trainers_and_models_need_no_dassl():
    layers = python("""
        import sys
        import common, common.fileio, common.images, common.dassl_env
        assert not {"datasets", "trainers", "dassl"} & set(sys.modules), "common imports a package above it"
        import datasets, datasets.splits, datasets.world.catalog, datasets.prepare.cli
        datasets.register_with_dassl()
        assert "dassl" in sys.modules and "trainers" not in sys.modules, "datasets imported trainers"
    """)
    assert layers.returncode == 0, layers.stderr
    models = python("""
        import sys
        from trainers import registry
        import trainers.records, trainers.results.builders, trainers.config, trainers.checkpoints
        names = [spec.name for spec in registry.specs()]  # imports every model module
        assert "dassl" not in sys.modules, "the models (or the registry) imported Dassl"
        print(" ".join(names))
    """)
    assert models.returncode == 0, models.stderr
    assert models.stdout.split() == ["ZeroshotCLIP", "ZeroshotCLIP2", "CoOp", "KgCoOp", "CoCoOp", "MaPLe", "IVLP",
                                     "PromptSRC", "DualMIPrompt"]


def python_files(folder):
    for base, _, files in os.walk(os.path.join(ROOT, folder)):
        yield from (os.path.join(base, name) for name in files if name.endswith(".py"))


def test_no_module_reaches_up_a_layer_or_edits_sys_path():
    rules = {"common": r"^\s*(from|import) (datasets|trainers)\b", "datasets": r"^\s*(from|import) trainers\b"}
    for folder, pattern in rules.items():
        for path in python_files(folder):
            with open(path) as handle:
                assert not re.search(pattern, handle.read(), re.M), f"{path} imports a layer above it"
    for folder in ("common", "datasets", "trainers"):
        for path in python_files(folder):
            with open(path) as handle:
                assert "sys.path" not in handle.read(), f"{path} edits sys.path (only entry points may)"


PLUGIN_MODEL = '''
from trainers.coop_model import CoOpCLIP
from trainers.registry import declare


def build(clip_model, classnames):
    return CoOpCLIP(clip_model, classnames, n_ctx=2, ctx_init="a photo of")


declare(name="Throwaway", adapter="throwaway", order=15, benchmark_model=build, config_folder="CoOp",
        default_config=lambda protocol, dataset, shots: "vit_b16_ep50" if protocol == "fewshot" else "vit_b16_ctxv1")
'''

PLUGIN_ADAPTER = '''
from dassl.engine import TRAINER_REGISTRY

from trainers.coop import CoOp


@TRAINER_REGISTRY.register()
class Throwaway(CoOp):
    """CoOp under another name: enough to show that train.py finds a trainer it was never told about."""
'''


@pytest.fixture
def plugin(tmp_path):
    (tmp_path / "throwaway_model.py").write_text(PLUGIN_MODEL)
    (tmp_path / "throwaway.py").write_text(PLUGIN_ADAPTER)
    path = os.pathsep.join(filter(None, (str(tmp_path), ROOT, os.environ.get("PYTHONPATH", ""))))
    return {"PYTHONPATH": path, registry.PLUGINS_VARIABLE: "throwaway_model"}


def test_the_protocol_scripts_find_a_declared_trainer_s_default_config(plugin):
    script = ("source scripts/common.sh; SHOTS=4; default_config Throwaway caltech101 base2new; "
              "default_config Throwaway imagenet fewshot; default_config Throwaway world_signs base2new; "
              "learns_nothing Throwaway || echo learns")
    result = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, **plugin})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["vit_b16_ctxv1 configs/trainers/CoOp/vit_b16_ctxv1.yaml learns",
                                          "vit_b16_ep50 configs/trainers/CoOp/vit_b16_ep50.yaml learns",
                                          "world configs/trainers/CoOp/world.yaml learns", "learns"]


def test_the_registry_command_refuses_unknown_trainers_configs_and_plugins(plugin):
    def ask(*args, env=None):
        return subprocess.run([sys.executable, "-m", "trainers.registry", *args], cwd=ROOT, capture_output=True,
                              text=True, env={**os.environ, **(env or {})})

    unknown = ask("config", "Nobody", "base2new", "dtd")
    assert unknown.returncode == 2 and "unknown trainer 'Nobody': choose from ZeroshotCLIP" in unknown.stderr
    missing = ask("config", "CoOp", "base2new", "dtd", "--name", "nonexistent")
    assert missing.returncode == 2 and "no config configs/trainers/CoOp/nonexistent.yaml" in missing.stderr
    assert "vit_b16_ctxv1" in missing.stderr  # it lists the trainer's configs
    broken = ask("list", env={**plugin, registry.PLUGINS_VARIABLE: "no_such_module"})
    assert broken.returncode == 2 and "TRAINER_PLUGINS names 'no_such_module'" in broken.stderr
    assert "Traceback" not in unknown.stderr + missing.stderr + broken.stderr


def test_the_tables_order_methods_by_the_registry(tmp_path, monkeypatch):
    import tables
    from test_tables import write

    monkeypatch.setattr(registry, "_SPECS", dict(registry._SPECS))  # the declaration below is undone afterwards
    registry.declare(name="Throwaway", adapter="throwaway", order=15, default_config=lambda *args: "x")
    for trainer in ("Zzz", "CoOp", "Throwaway", "ZeroshotCLIP"):
        for subsample, accuracy in (("base", 80.0), ("new", 70.0)):
            write(tmp_path, f"{trainer}/{subsample}", "DescribableTextures", trainer, 1, accuracy, subsample=subsample)
    assert tables.main([str(tmp_path), "--protocol", "base2new", "--no-figures", "--no-published"]) == 0
    text = (tmp_path / "tables" / "base2new.md").read_text()
    rows = [line.split("|")[2].strip() for line in text.splitlines() if line.startswith("| ") and "Method" not in line]
    methods = list(dict.fromkeys(row for row in rows if row))
    assert methods == ["ZeroshotCLIP", "Throwaway", "CoOp", "Zzz"]  # undeclared trainers come last


def test_the_benchmark_measures_a_declared_trainer(plugin, tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "scripts/benchmark.py", "--quick", "--trainers", "Throwaway", "--json",
                             str(out)], cwd=ROOT, capture_output=True, text=True, env={**os.environ, **plugin})
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["rows"]
    assert {row["trainer"] for row in rows} == {"Throwaway"} and {row["mode"] for row in rows} == {"ours", "reference"}
    import benchmark

    from trainers.clip_loader import random_clip

    expected = benchmark.learned_bytes(CoOpCLIP(random_clip("tiny"), ["a"], n_ctx=2, ctx_init="a photo of"))
    assert all(row["checkpoint_bytes"] == expected for row in rows)  # the plugin's own model was measured


@pytest.mark.integration
def test_train_py_registers_a_declared_trainer_with_dassl(plugin):
    result = python("""
        import sys
        sys.argv = ["train.py"]
        import train  # registers every declared trainer's adapter
        from dassl.engine import TRAINER_REGISTRY
        print(sorted(set(TRAINER_REGISTRY.registered_names()) & {"Throwaway", "CoOp", "DualMIPrompt"}))
    """, env=plugin)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == "['CoOp', 'DualMIPrompt', 'Throwaway']"
