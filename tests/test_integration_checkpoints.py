"""Checkpoints through train.py with real Dassl and the tiny CLIP: a run keeps its two newest checkpoints, resumes
past a corrupt one to exactly the uninterrupted result, and stops with one message (no traceback) on a checkpoint
that loads but cannot be resumed from, or that was crafted to run code."""
import json
import os
import shutil

import pytest
import torch
from fixtures import PET_CLASSES, pets_setup, run_train, tiny_overrides

pytestmark = pytest.mark.integration

EPOCHS = 3


def train_args(root, clip_file, out, *extra):
    return ["--root", root, "--seed", 2, "--trainer", "CoOp", "--dataset-config-file",
            "configs/datasets/oxford_pets.yaml", "--config-file", "configs/trainers/CoOp/vit_b16_ctxv1.yaml",
            "--output-dir", out, *tiny_overrides(clip_file, epochs=EPOCHS, batch=2), *extra]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of 3 epochs with the default TRAIN.KEEP_CHECKPOINTS."""
    tmp = tmp_path_factory.mktemp("checkpoints")
    root, clip_file = pets_setup(tmp, classes=PET_CLASSES[:4], per_split=(4, 1, 2))
    out = tmp / "reference"
    run_train(train_args(root, clip_file, out))
    return root, clip_file, out


def stopped_copy(out, to):
    """The run folder as a run killed during its last epoch would have left it (no record, no log)."""
    shutil.copytree(out, to)
    for path in [to / "results.json", *to.glob("log.txt*")]:
        path.unlink()
    return to


def files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_run_keeps_two_checkpoints_and_resumes_past_a_corrupt_one(reference, tmp_path):
    # Catches: every epoch's checkpoint kept; a corrupt last checkpoint stopping the resume (blaming unsafe
    # pickling); a fallback that does not end with the uninterrupted result.
    root, clip_file, out = reference
    assert files(out / "prompt_learner") == ["checkpoint", "model.pth.tar-2", "model.pth.tar-3"]

    broken = stopped_copy(out, tmp_path / "broken")
    (broken / "prompt_learner" / "model.pth.tar-3").write_bytes(os.urandom(4096))
    result = run_train(train_args(root, clip_file, broken))
    assert "model.pth.tar-3 is corrupt: it is not a torch archive" in result.stderr
    assert "model.pth.tar-2 (epoch 2, skipping corrupt model.pth.tar-3)" in result.stdout
    assert "Traceback" not in result.stderr
    assert files(broken / "prompt_learner") == ["checkpoint", "model.pth.tar-2", "model.pth.tar-3"]

    def final(folder):
        checkpoint = torch.load(folder / "prompt_learner" / "model.pth.tar-3", weights_only=True)
        return checkpoint["state_dict"]["prompt_learner.ctx"], json.loads((folder / "results.json").read_text())

    (ctx, record), (ctx_reference, record_reference) = final(broken), final(out)
    assert torch.equal(ctx, ctx_reference)
    assert record["accuracy"] == record_reference["accuracy"]


def test_keep_checkpoints_zero_keeps_all_and_a_negative_number_stops_before_training(reference, tmp_path):
    # Catches: TRAIN.KEEP_CHECKPOINTS not a config key, 0 not meaning "all", a negative value deleting checkpoints.
    root, clip_file, _ = reference
    run_train(train_args(root, clip_file, tmp_path / "all", "TRAIN.KEEP_CHECKPOINTS", "0"))
    assert files(tmp_path / "all" / "prompt_learner") == ["checkpoint"] + [f"model.pth.tar-{e}" for e in (1, 2, 3)]
    result = run_train(train_args(root, clip_file, tmp_path / "neg", "TRAIN.KEEP_CHECKPOINTS", "-1"), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "TRAIN.KEEP_CHECKPOINTS is -1" in result.stderr
    assert not (tmp_path / "neg" / "prompt_learner").exists()


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def last_checkpoint(out):
    return torch.load(out / "prompt_learner" / "model.pth.tar-3", weights_only=True)


CASES = {  # the last checkpoint -> the one message train.py ends with
    "no optimizer": (lambda c, marker: {k: v for k, v in c.items() if k != "optimizer"}, "has no optimizer"),
    "no scheduler": (lambda c, marker: {k: v for k, v in c.items() if k != "scheduler"}, "has no scheduler"),
    "damaged random states": (lambda c, marker: {**c, "random_states": {"python": 1}},
                              "random states cannot be restored"),
    "crafted to run code": (lambda c, marker: {**c, "payload": RunsCode(str(marker))}, "could run code"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_last_checkpoint_that_cannot_be_resumed_from_stops_with_one_message(reference, tmp_path, case):
    # Catches: KeyError/TypeError tracebacks on resume; a crafted checkpoint loaded (the marker would appear) or
    # silently skipped for an older one.
    root, clip_file, out = reference
    broken = stopped_copy(out, tmp_path / "broken")
    make, message = CASES[case]
    marker = tmp_path / "pwned"
    torch.save(make(last_checkpoint(out), marker), broken / "prompt_learner" / "model.pth.tar-3")
    result = run_train(train_args(root, clip_file, broken), check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert message in result.stderr and "model.pth.tar-3" in result.stderr
    assert not marker.exists() and not (broken / "results.json").exists()


def test_evaluating_a_corrupt_checkpoint_says_corrupt(reference, tmp_path):
    # Catches: a damaged file reported as one refused for needing unsafe pickled objects.
    root, clip_file, out = reference
    model = tmp_path / "model"
    shutil.copytree(out, model)
    path = model / "prompt_learner" / "model.pth.tar-3"
    path.write_bytes(path.read_bytes()[:1000])  # cut short
    args = train_args(root, clip_file, tmp_path / "ev")
    result = run_train(args[:12] + ["--eval-only", "--model-dir", model] + args[12:], check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "model.pth.tar-3 is corrupt: it is not a torch archive" in result.stderr
    assert "could run code" not in result.stderr
