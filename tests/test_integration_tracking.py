"""``TRAIN.TRACK_NEW``: both halves of a validation fold scored after every epoch, run the way a user runs it (the
protocol scripts, on the generated world). The tracked accuracies after the last epoch are the ones the run's own
evaluation and the fold's new-class evaluation measure; tracking changes nothing of training; a run it cannot
track is refused in one line."""
import json
import os
import re

import pytest
from fixtures import run_script

pytestmark = pytest.mark.integration

FOLD = ["DATASET.VAL_FOLD", "1", "OPTIM.MAX_EPOCH", "2", "OPTIM.WARMUP_EPOCH", "0"]
COMMON = "world_shapes/shots_2/{trainer}/world/seed1"


def read(folder, name):
    with open(os.path.join(folder, name)) as handle:
        return handle.read()


def tracked_lines(log):
    """``{epoch: {name: value}}`` of the tracked accuracies in a training log."""
    found = {}
    for match in re.finditer(r"epoch \[(\d+)/\d+\] (?:tracked|averages): (.*)", log):
        values = dict(zip(match.group(2).split()[0::2], map(float, match.group(2).split()[1::2])))
        tracked = {k: v for k, v in values.items() if k.startswith("track_")}
        if tracked:
            found[int(match.group(1))] = tracked
    return found


@pytest.mark.parametrize("trainer", ["CoOp", "DualMIPrompt"])
def test_tracked_accuracies_are_the_evaluated_ones_and_training_is_unchanged(world_env, tmp_path, trainer):
    env = {**world_env, "SHOTS": "2"}
    plain_env = {**env, "OUTPUT": str(tmp_path / "plain")}
    run_script("base2new_train.sh", ["world_shapes", 1, trainer], FOLD + ["TRAIN.TRACK_NEW", "True"], env=env)
    run_script("base2new_test.sh", ["world_shapes", 1, trainer], FOLD + ["TRAIN.TRACK_NEW", "True"], env=env)
    run_script("base2new_train.sh", ["world_shapes", 1, trainer], FOLD, env=plain_env)

    tracked_root = os.path.join(env["OUTPUT"], "base2new")
    base_run = os.path.join(tracked_root, "train_base", COMMON.format(trainer=trainer))
    curve = tracked_lines(read(base_run, "log.txt"))
    assert sorted(curve) == [0, 1, 2]
    tracked = {"track_base_acc", "track_new_acc", "track_base_cos", "track_new_cos"}
    assert all(set(values) == tracked for values in (curve[1], curve[2]))
    assert all(-1 <= values[key] <= 1 for values in curve.values() for key in ("track_base_cos", "track_new_cos"))
    # Before the first step, zero-shot CLIP on the same pseudo-new images: the fold's ZeroshotCLIP run.
    zs_line = re.search(r"epoch \[0/2\] tracked: (.*)", read(base_run, "log.txt")).group(1).split()
    zs_new = float(zs_line[zs_line.index("zs_new_acc") + 1])
    run_script("base2new_test.sh", ["world_shapes", 1, "ZeroshotCLIP"], ["DATASET.VAL_FOLD", "1"], env=env)
    zs_run = os.path.join(tracked_root, "test_new", COMMON.format(trainer="ZeroshotCLIP"))
    assert zs_new == pytest.approx(json.loads(read(zs_run, "results.json"))["accuracy"], abs=1e-3)
    base = json.loads(read(base_run, "results.json"))
    new = json.loads(read(os.path.join(tracked_root, "test_new", COMMON.format(trainer=trainer)), "results.json"))
    assert base["split"] == new["split"] == "val_fold1"
    # After the last epoch: the run's own evaluation of the pseudo-base classes, and the fold's pseudo-new run.
    assert curve[2]["track_base_acc"] == pytest.approx(base["accuracy"], abs=1e-3)
    assert curve[2]["track_new_acc"] == pytest.approx(new["accuracy"], abs=1e-3)
    # Training is the same with and without tracking, to the last digit of what it logs and evaluates.
    plain_run = os.path.join(plain_env["OUTPUT"], "base2new", "train_base", COMMON.format(trainer=trainer))
    plain = json.loads(read(plain_run, "results.json"))
    assert plain["accuracy"] == base["accuracy"]
    losses = [re.findall(r"averages: loss ([0-9.]+)", read(run, "log.txt")) for run in (base_run, plain_run)]
    assert len(losses[0]) == 2 and losses[0] == losses[1]


@pytest.mark.parametrize("trainer, overrides, message", [
    ("CoOp", ["OPTIM.MAX_EPOCH", "1", "OPTIM.WARMUP_EPOCH", "0"], "needs DATASET.VAL_FOLD k"),
    ("CoCoOp", FOLD, "CoCoOp"),
])
def test_a_run_that_cannot_be_tracked_is_refused_in_one_line(world_env, tmp_path, trainer, overrides, message):
    env = {**world_env, "SHOTS": "2", "OUTPUT": str(tmp_path / "out")}
    result = run_script("base2new_train.sh", ["world_shapes", 1, trainer], overrides + ["TRAIN.TRACK_NEW", "True"],
                        env=env, check=False)
    assert result.returncode != 0
    assert "TRAIN.TRACK_NEW" in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr
