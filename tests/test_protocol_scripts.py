"""The protocol scripts' folders, arguments, defaults, skipping and failure handling, with train.py replaced by a
stub that records its arguments (no Dassl needed; the integration tests run the real one)."""
import json
import subprocess
import sys

import pytest
from fixtures import REPO

STUB = """import json, os, sys
args = sys.argv[2:]
out = args[args.index("--output-dir") + 1]
os.makedirs(out, exist_ok=True)
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(out + "\\n")
if os.environ.get("STUB_FAIL") and os.environ["STUB_FAIL"] in out:
    sys.exit(3)
with open(os.path.join(out, "results.json"), "w") as handle:
    json.dump({"argv": args}, handle)
"""


@pytest.fixture
def run(tmp_path):
    stub = tmp_path / "stub.py"
    stub.write_text(STUB)
    wrapper = tmp_path / "python"
    # train.py is the stub; the scripts' other Python calls (python3 -m trainers.registry) run for real
    wrapper.write_text(f"#!/bin/sh\n[ \"$1\" = -m ] && exec {sys.executable} \"$@\"\nexec {sys.executable} {stub} \"$@\"\n")
    wrapper.chmod(0o755)
    log = tmp_path / "calls.txt"
    log.write_text("")

    def call(script, *args, check=True, **env):
        full_env = {"PATH": "/usr/bin:/bin", "PYTHON": str(wrapper), "STUB_LOG": str(log), "DATA": "/data",
                    "OUTPUT": str(tmp_path / "output"), **{k: str(v) for k, v in env.items()}}
        result = subprocess.run(["bash", f"scripts/{script}", *map(str, args)], cwd=REPO, env=full_env,
                                capture_output=True, text=True)
        if check and result.returncode != 0:
            raise AssertionError(f"{script} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    call.output = tmp_path / "output"
    call.calls = lambda: [line for line in log.read_text().splitlines() if line]
    return call


def argv(folder):
    with open(folder / "results.json") as handle:
        return json.load(handle)["argv"]


def option(args, name):
    return args[args.index(name) + 1]


def overrides(args):
    """The trailing KEY VALUE pairs, as a dict (later ones win, as in train.py)."""
    first = next(i for i, a in enumerate(args) if a == "PROTOCOL")
    pairs = args[first:]
    return dict(zip(pairs[0::2], pairs[1::2]))


def test_base2new_benchmark_runs_every_dataset_and_seed_once(run):
    result = run("base2new.sh", "CoOp", "--", "OPTIM.MAX_EPOCH", 1, DATASETS="imagenet dtd", SEEDS="1 2", SHOTS=4)
    assert "All runs finished" in result.stdout
    folders = [c.split("/output/")[1] for c in run.calls()]
    assert folders == [
        f"base2new/{step}/{dataset}/shots_4/CoOp/{config}/seed{seed}"
        for dataset, config in (("imagenet", "vit_b16_ep50_ctxv1"), ("dtd", "vit_b16_ctxv1"))
        for seed in (1, 2) for step in ("train_base", "test_new")
    ]
    test = argv(run.output / "base2new/test_new/dtd/shots_4/CoOp/vit_b16_ctxv1/seed2")
    assert option(test, "--model-dir") == str(run.output / "base2new/train_base/dtd/shots_4/CoOp/vit_b16_ctxv1/seed2")
    assert "--eval-only" in test and option(test, "--seed") == "2"
    assert option(test, "--config-file") == "configs/trainers/CoOp/vit_b16_ctxv1.yaml"
    assert overrides(test) == {"PROTOCOL": "base2new", "DATASET.NUM_SHOTS": "4", "DATASET.SUBSAMPLE_CLASSES": "new",
                               "OPTIM.MAX_EPOCH": "1"}
    train = argv(run.output / "base2new/train_base/imagenet/shots_4/CoOp/vit_b16_ep50_ctxv1/seed1")
    assert "--eval-only" not in train and overrides(train)["DATASET.SUBSAMPLE_CLASSES"] == "base"
    # Rerun: every run is finished, nothing is called again.
    again = run("base2new.sh", "CoOp", DATASETS="imagenet dtd", SEEDS="1 2", SHOTS=4)
    assert again.stdout.count("finished run, skipped") == 8
    assert len(run.calls()) == 8


def test_a_failed_run_is_listed_and_the_others_go_on(run):
    result = run("base2new.sh", DATASETS="dtd eurosat", SEEDS="1", TRAINER="CoOp", STUB_FAIL="train_base/dtd",
                 check=False)
    assert result.returncode == 1
    assert "1 run(s) failed" in result.stderr
    assert "SHOTS=" not in result.stderr and "TRAINER=CoOp bash scripts/base2new_train.sh dtd 1" in result.stderr
    # No test after a failed training; the next dataset still runs.
    assert [c.split("/output/")[1].split("/shots")[0] for c in run.calls()] == [
        "base2new/train_base/dtd", "base2new/train_base/eurosat", "base2new/test_new/eurosat"]


def test_cross_dataset_and_domain_generalisation_share_the_imagenet_model(run):
    run("xd.sh", "CoOp", SEEDS="1", DATASETS="caltech101 oxford_pets")
    run("dg.sh", "CoOp", SEEDS="1")
    folders = [c.split("/output/xd/")[1] for c in run.calls()]
    model = "imagenet/CoOp/vit_b16_ep50_ctxv1_16shots/seed1"
    targets = ("caltech101", "oxford_pets", "imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
    assert folders == [model] + [f"evaluation/CoOp/vit_b16_ep50_ctxv1_16shots/{d}/seed1" for d in targets]
    train = argv(run.output / "xd" / model)
    assert option(train, "--dataset-config-file") == "configs/datasets/imagenet.yaml"
    assert overrides(train) == {"PROTOCOL": "xd", "DATASET.NUM_SHOTS": "16"}
    test = argv(run.output / "xd/evaluation/CoOp/vit_b16_ep50_ctxv1_16shots/imagenet_a/seed1")
    assert option(test, "--model-dir") == str(run.output / "xd" / model) and "--eval-only" in test
    assert option(test, "--dataset-config-file") == "configs/datasets/imagenet_a.yaml"


def test_cross_dataset_test_needs_the_imagenet_model(run):
    result = run("xd_test.sh", "dtd", 3, "CoOp", check=False)
    assert result.returncode == 2
    assert "run scripts/xd_train.sh 3 CoOp vit_b16_ep50_ctxv1 first" in result.stderr
    assert run.calls() == []


def test_zero_shot_is_only_evaluated(run):
    run("xd_train.sh", 1, "ZeroshotCLIP")
    run("xd_test.sh", "dtd", 1, "ZeroshotCLIP")
    run("fewshot.sh", "ZeroshotCLIP", SEEDS="1", DATASETS="dtd")
    train = argv(run.output / "xd/imagenet/ZeroshotCLIP/vit_b16_16shots/seed1")
    test = argv(run.output / "xd/evaluation/ZeroshotCLIP/vit_b16_16shots/dtd/seed1")
    few = argv(run.output / "fewshot/dtd/ZeroshotCLIP/vit_b16_0shots/seed1")
    assert "--eval-only" in train and "--eval-only" in test and "--model-dir" not in test
    assert "--eval-only" in few and overrides(few)["DATASET.NUM_SHOTS"] == "0"
    assert len(run.calls()) == 3


def test_fewshot_configs_follow_coop_schedule(run):
    run("fewshot.sh", "CoOp", SEEDS="1", DATASETS="dtd imagenet")
    folders = [c.split("/output/fewshot/")[1] for c in run.calls()]
    expected = {1: "vit_b16_ep50", 2: "vit_b16_ep100", 4: "vit_b16_ep100", 8: "vit_b16", 16: "vit_b16"}
    assert folders == [f"dtd/CoOp/{expected[k]}_{k}shots/seed1" for k in (1, 2, 4, 8, 16)] + [
        f"imagenet/CoOp/vit_b16_ep50_{k}shots/seed1" for k in (1, 2, 4, 8, 16)]
    args = argv(run.output / "fewshot/dtd/CoOp/vit_b16_ep100_4shots/seed1")
    assert overrides(args) == {"PROTOCOL": "fewshot", "DATASET.NUM_SHOTS": "4"} and "--eval-only" not in args
    # A config given explicitly is used for every shot count.
    run("fewshot.sh", "CoOp", "vit_b16_ctxv1", SEEDS="2", DATASETS="dtd", SHOTS_LIST="1 2")
    assert run.calls()[-2:] == [str(run.output / f"fewshot/dtd/CoOp/vit_b16_ctxv1_{k}shots/seed2") for k in (1, 2)]


@pytest.mark.parametrize("script,args,message", [
    ("base2new.sh", ["CoOp"], "unknown dataset 'nope'"),
    ("base2new_train.sh", ["nope", 1], "unknown dataset 'nope'"),
    ("base2new_train.sh", ["dtd", "x"], "SEED must be an integer"),
    ("base2new_train.sh", ["dtd", 1, "CoOp", "missing_cfg"], "no config configs/trainers/CoOp/missing_cfg.yaml"),
    ("xd_train.sh", [], "usage:"),
    ("fewshot_train.sh", ["dtd", 1, "NoSuchTrainer"], "unknown trainer 'NoSuchTrainer': choose from ZeroshotCLIP"),
])
def test_bad_arguments_are_explained(run, script, args, message):
    result = run(script, *args, check=False, DATASETS="nope")
    assert result.returncode == 2
    assert message in result.stderr
    assert run.calls() == []
