"""The main job on the embedded world: the base-to-new scripts with no configuration beyond DATA and OUTPUT
(the default trainer's world config is chosen by the scripts, the dataset is generated on first use, the
shipped small CLIP is loaded from the repository), and zero-shot CLIP through the pipeline reproducing the
accuracies recorded beside the weights."""
import json
import os
import sys

import pytest
from fixtures import REPO, run_command, run_script

pytestmark = pytest.mark.integration


def read_record(folder):
    with open(os.path.join(folder, "results.json")) as handle:
        return json.load(handle)


def test_default_trainer_runs_base_to_new_on_the_world(world_env):
    env = {**world_env, "SHOTS": "2"}
    quick = ["OPTIM.MAX_EPOCH", "1", "OPTIM.WARMUP_EPOCH", "0"]
    run_script("base2new_train.sh", ["world", 1], quick, env=env)
    run_script("base2new_test.sh", ["world", 1], quick, env=env)
    common = "world/shots_2/DualMIPrompt/world/seed1"  # DualMIPrompt is the scripts' default trainer
    base = read_record(os.path.join(world_env["OUTPUT"], "base2new/train_base", common))
    new = read_record(os.path.join(world_env["OUTPUT"], "base2new/test_new", common))
    assert (base["trainer"], base["config"], base["backbone"]) == ("DualMIPrompt", "world", "WorldCLIP")
    assert (base["subsample"], new["subsample"]) == ("base", "new")
    assert base["num_classes"] == new["num_classes"] == 20
    assert base["num_images"] == new["num_images"] == 20 * 100
    assert base["eval_only"] is False and new["eval_only"] is True and base["epoch"] == new["epoch"] == 1
    assert os.path.isfile(os.path.join(world_env["DATA"], "world", "split_world.json"))


def test_zero_shot_through_the_pipeline_matches_the_recorded_accuracy(world_env):
    with open(os.path.join(REPO, "trainers", "pretrained", "world_clip.json")) as handle:
        recorded = json.load(handle)["zero_shot"]["world"]
    run_script("base2new_train.sh", ["world", 1, "ZeroshotCLIP"], env=world_env)
    run_script("base2new_test.sh", ["world", 1, "ZeroshotCLIP"], env=world_env)
    common = "world/shots_16/ZeroshotCLIP/world/seed1"
    base = read_record(os.path.join(world_env["OUTPUT"], "base2new/train_base", common))
    new = read_record(os.path.join(world_env["OUTPUT"], "base2new/test_new", common))
    # Same pixels (PNG is lossless), same preprocessing, same template: the numbers agree up to rounding.
    assert base["accuracy"] == pytest.approx(recorded["base"], abs=0.5)
    assert new["accuracy"] == pytest.approx(recorded["new"], abs=0.5)


def test_suite_command_end_to_end(world_env, tmp_path):
    """Two datasets, one seed, one epoch through the real scripts: the table, JSON and plot; a second call skips
    the finished runs; a run that fails is named with its log and the others still count."""
    env = {**world_env, "SHOTS": "2"}
    out = tmp_path / "suite"
    command = [sys.executable, "scripts/suite.py", "--trainers", "ZeroshotCLIP", "CoOp",
               "--datasets", "world_shapes", "world_counts", "--seeds", "1", "--out", str(out),
               "--", "OPTIM.MAX_EPOCH", "1", "OPTIM.WARMUP_EPOCH", "0"]
    run_command(command, env=env)
    numbers = json.loads((out / "suite.json").read_text())
    assert numbers["datasets"] == ["world_shapes", "world_counts"] and list(numbers["trainers"]) == ["ZeroshotCLIP", "CoOp"]
    assert numbers["overrides"] == ["OPTIM.MAX_EPOCH", "1", "OPTIM.WARMUP_EPOCH", "0"] and numbers["failures"] == []
    runs = numbers["runs"]  # a folder of their own: runs with overrides are never mixed with default runs
    assert os.path.dirname(runs) == world_env["OUTPUT"] and os.path.basename(runs).startswith("overrides_")
    for trainer in ("ZeroshotCLIP", "CoOp"):
        common = f"world_counts/shots_2/{trainer}/world/seed1"
        base = read_record(os.path.join(runs, "base2new/train_base", common))
        new = read_record(os.path.join(runs, "base2new/test_new", common))
        assert base["num_images"] == new["num_images"] == 16 * 100  # 4 counts x 4 colours per half
        assert (base["epoch"], base["protocol"]) == ((None if trainer == "ZeroshotCLIP" else 1), "base2new")
        row = numbers["trainers"][trainer]["datasets"]["world_counts"]
        assert (row["base"]["mean"], row["new"]["mean"]) == (base["accuracy"], new["accuracy"])
        line = f"| world_counts | {trainer} | {base['accuracy']:.2f} | {new['accuracy']:.2f} | "
        assert line in (out / "suite.md").read_text()
    (pair,) = numbers["pairs"]
    assert (pair["a"], pair["b"], pair["n"]) == ("CoOp", "ZeroshotCLIP", 2)
    assert (out / "suite.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Again, with one more dataset whose folder is not a generated dataset, through a pool of two workers: finished
    # runs are not started again, the broken one is named with its log, the exit status says so.
    finished = os.path.join(runs, "base2new/train_base/world_shapes/shots_2/CoOp/world/seed1/results.json")
    written = os.stat(finished).st_mtime_ns
    # A DATA of its own (the session's DATA is shared): the two generated datasets, and a folder in world_signs' place
    data = tmp_path / "data"
    data.mkdir()
    for name in ("world_shapes", "world_counts"):
        (data / name).symlink_to(os.path.join(world_env["DATA"], name))
    (data / "world_signs" / "junk").mkdir(parents=True)
    again = run_command(command[:6] + ["world_signs"] + command[6:-5] + ["--workers", "2"] + command[-5:],
                        env={**env, "DATA": str(data)}, check=False)
    assert again.returncode == 1
    assert os.stat(finished).st_mtime_ns == written
    logs = os.path.join(runs, "launch", "base2new", "logs")
    assert open(os.path.join(logs, "CoOp.train_base.world_shapes.seed1.log")).read().count("=== ") == 1  # ran once
    failed_log = os.path.join(logs, "ZeroshotCLIP.train_base.world_signs.seed1.log")
    assert f"ZeroshotCLIP.train_base.world_signs.seed1: FAILED, see {failed_log}" in again.stdout
    assert "not a generated world dataset" in open(failed_log).read()
    assert f"world_signs CoOp seed 1: see {os.path.join(logs, 'CoOp.train_base.world_signs.seed1.log')}" in again.stderr
    again_numbers = json.loads((out / "suite.json").read_text())
    assert again_numbers["trainers"]["CoOp"]["datasets"]["world_shapes"]["seeds"] == [1]
    assert [(f["dataset"], f["trainer"]) for f in again_numbers["failures"]] == [("world_signs", "ZeroshotCLIP"),
                                                                                ("world_signs", "CoOp")]


@pytest.mark.parametrize("name", ["world_shapes", "world_sketch"])
def test_other_world_datasets_build_through_dassl(world_env, name):
    import datasets

    datasets.register_with_dassl()
    from dassl.data.datasets import build_dataset

    from datasets.world import catalog
    from trainers.config import get_cfg_default

    spec = catalog.get_spec(name)
    cfg = get_cfg_default()
    cfg.merge_from_file(os.path.join(REPO, "configs", "datasets", f"{name}.yaml"))
    cfg.DATASET.ROOT, cfg.DATASET.NUM_SHOTS, cfg.SEED = world_env["DATA"], -1, 1
    dataset = build_dataset(cfg)
    assert dataset.classnames == spec.classnames
    assert dataset.template == spec.template
    assert len(dataset.test) == len(spec.classes) * spec.per_split[2]
    if spec.test_only:  # a test-only dataset (DG target) serves its test images for every split, as ImageNet-Sketch
        assert [d.impath for d in dataset.train_x] == [d.impath for d in dataset.test]
    else:
        assert len(dataset.train_x) == len(spec.classes) * spec.per_split[0]


def test_cross_dataset_and_domain_generalisation_on_the_world(world_env, tmp_path):
    """XD_SOURCE=world: the world model (one epoch, 2 shots) evaluated on another suite dataset and on a DG
    rendering, through the real scripts; the tables tool makes both transfer tables with the world as source."""
    env = {**world_env, "SHOTS": "2", "XD_SOURCE": "world", "SEEDS": "1"}
    output = world_env["OUTPUT"]
    run_command(["bash", "scripts/xd.sh", "CoOp", "--", "OPTIM.MAX_EPOCH", "1", "OPTIM.WARMUP_EPOCH", "0"],
                env={**env, "DATASETS": "world_shapes"})
    run_command(["bash", "scripts/dg.sh", "CoOp", "--", "OPTIM.MAX_EPOCH", "1", "OPTIM.WARMUP_EPOCH", "0"],
                env={**env, "DATASETS": "world_sketch"})
    source = read_record(os.path.join(output, "xd/world/CoOp/world_2shots/seed1"))
    assert (source["dataset"], source["subsample"], source["num_classes"], source["eval_only"]) == (
        "World", "all", 40, False)
    for dataset, name, classes in (("world_shapes", "WorldShapes", 10), ("world_sketch", "WorldSketch", 40)):
        record = read_record(os.path.join(output, f"xd/evaluation/CoOp/world_2shots/{dataset}/seed1"))
        assert (record["dataset"], record["num_classes"], record["eval_only"], record["protocol"]) == (
            name, classes, True, "xd")
    run_command([sys.executable, "scripts/tables.py", os.path.join(output, "xd"), "--out", str(tmp_path)])
    xd_table = (tmp_path / "xd.md").read_text()
    dg_table = (tmp_path / "dg.md").read_text()
    assert "trained on World" in xd_table and "WorldShapes" in xd_table and "WorldSketch" not in xd_table
    assert "trained on World" in dg_table and "WorldSketch" in dg_table and "WorldShapes" not in dg_table


def test_sweep_end_to_end_on_validation_folds(world_env, tmp_path):
    """A grid of two learning rates x two folds on one dataset, one epoch: every run is a validation run (its
    record says which fold; its classes are pseudo-base or pseudo-new base classes; its images are held-out
    training images), and the ranked table names both settings."""
    env = {**world_env, "SHOTS": "2"}
    out = tmp_path / "sweep"
    run_command([sys.executable, "scripts/sweep.py", "CoOp", "--grid", "OPTIM.LR=0.01,0.02", "--datasets",
                 "world_shapes", "--folds", "1", "2", "--out", str(out), "--workers", "2",
                 "--", "OPTIM.MAX_EPOCH", "1", "OPTIM.WARMUP_EPOCH", "0"], env=env)
    from datasets.world import catalog

    numbers = json.loads((out / "sweep.json").read_text())
    runs = numbers["runs"]  # the fixed override (one epoch) gives the sweep a folder of its own
    assert runs.startswith(world_env["OUTPUT"]) and runs.endswith(os.path.join("sweep", "CoOp"))
    spec = catalog.get_spec("world_shapes")
    held_out = spec.per_split[0] - 2 + spec.per_split[1]  # training images beyond the 2 shots, and the val split
    for setting in ("LR=0.01", "LR=0.02"):
        sizes = []
        for fold in (1, 2):
            common = "world_shapes/shots_2/CoOp/world/seed1"
            root = os.path.join(runs, setting, f"fold{fold}", "base2new")
            base = read_record(os.path.join(root, "train_base", common))
            new = read_record(os.path.join(root, "test_new", common))
            assert base["split"] == new["split"] == f"val_fold{fold}"
            assert base["num_classes"] + new["num_classes"] == 5  # the 5 base classes, split in two
            assert base["num_images"] == base["num_classes"] * held_out
            sizes.append(new["num_classes"])
        assert sorted(sizes) == [2, 3]
    assert numbers["reference"] == "LR=0.01" and {r["setting"] for r in numbers["ranking"]} == {"LR=0.01", "LR=0.02"}
    assert all(r["cells"] == 2 for r in numbers["ranking"])
    assert "| 1 |" in (out / "sweep.md").read_text()
