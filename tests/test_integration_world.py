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


@pytest.fixture(scope="module")
def world_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    return {"DATA": str(root / "data"), "OUTPUT": str(root / "output")}


def read_record(folder):
    with open(os.path.join(folder, "results.json")) as handle:
        return json.load(handle)


def test_default_trainer_runs_base_to_new_on_the_world(world_env):
    env = {**world_env, "SHOTS": "2"}
    quick = ["OPTIM.MAX_EPOCH", "1"]
    run_script("base2new_train.sh", ["world", 1], quick, env=env)
    run_script("base2new_test.sh", ["world", 1], quick, env=env)
    common = "world/shots_2/DualMIPrompt/world/seed1"  # DualMIPrompt is the scripts' default trainer
    base = read_record(os.path.join(world_env["OUTPUT"], "base2new/train_base", common))
    new = read_record(os.path.join(world_env["OUTPUT"], "base2new/test_new", common))
    assert (base["trainer"], base["config"], base["backbone"]) == ("DualMIPrompt", "world", "WorldCLIP")
    assert (base["subsample"], new["subsample"]) == ("base", "new")
    assert base["num_classes"] == new["num_classes"] == 20
    assert base["num_images"] == new["num_images"] == 20 * 30
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


def test_comparison_command_prints_the_table_and_names_missing_trainers(world_env):
    result = run_command([sys.executable, "scripts/compare_world.py", "--trainers", "ZeroshotCLIP", "NoSuchTrainer",
                          "--seeds", "1"], env=world_env)
    assert "NoSuchTrainer: skipped, not in this checkout" in result.stdout
    common = "world/shots_16/ZeroshotCLIP/world/seed1"
    base = read_record(os.path.join(world_env["OUTPUT"], "base2new/train_base", common))["accuracy"]
    new = read_record(os.path.join(world_env["OUTPUT"], "base2new/test_new", common))["accuracy"]
    row = next(line for line in result.stdout.splitlines() if line.startswith("| ZeroshotCLIP"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells == ["ZeroshotCLIP", f"{base:.2f}", f"{new:.2f}", f"{2 * base * new / (base + new):.2f}", "1/1"]
    assert "not run: NoSuchTrainer" in result.stdout


@pytest.mark.parametrize("name", ["world_shapes", "world_sketch"])
def test_other_world_datasets_build_through_dassl(world_env, name):
    import datasets  # noqa: F401  (registers the datasets)
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
