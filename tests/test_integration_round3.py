"""What a shared or unlucky run folder meets, run as a user runs train.py: a run folder reached through a link,
a refused run that must write nothing, checkpoints that do not fit the trainer loading them, a resume with another
schedule, a read-only data folder, and a broken link where the world is generated."""
import os

import pytest
from fixtures import pets_setup, run_train, tiny_overrides

from common import runlock

pytestmark = pytest.mark.integration

PETS = ["--dataset-config-file", "configs/datasets/oxford_pets.yaml"]
COOP = ["--trainer", "CoOp", "--config-file", "configs/trainers/CoOp/vit_b16_ctxv1.yaml"]
COCOOP = ["--trainer", "CoCoOp", "--config-file", "configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml"]


def train(root, clip_file, out, trainer=COOP, epochs=1, extra=(), **kwargs):
    return run_train([*trainer, "--root", root, "--seed", 1, *PETS, "--output-dir", out,
                      *tiny_overrides(clip_file, epochs=epochs), *extra], **kwargs)


def error_line(result):
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[-1] if lines else ""


def test_a_run_folder_reached_through_a_link_has_the_lock_of_the_folder(tmp_path):
    root, clip_file = pets_setup(tmp_path)
    (tmp_path / "out" / "run").mkdir(parents=True)
    os.symlink(tmp_path / "out" / "run", tmp_path / "out" / "run_link")
    held = runlock.acquire(str(tmp_path / "out" / "run"))  # a run training into out/run
    try:
        result = train(root, clip_file, tmp_path / "out" / "run_link", check=False)
    finally:
        held.close()
    assert result.returncode == runlock.LOCKED_EXIT_STATUS, result.stderr[-2000:]
    assert "is being written by process" in error_line(result)
    assert os.listdir(tmp_path / "out" / "run") == []
