"""Output files: written whole or not at all, with the umask's mode, and a failed write said in one line."""
import errno
import os
import stat
import subprocess
import sys

import pytest
import torch
from fixtures import REPO, pets_setup, run_command, tiny_overrides
from test_tables import write

from common import fileio
from trainers import checkpoints


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_a_new_file_gets_the_umask_mode_not_0600(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        fileio.atomic_write_json(tmp_path / "results.json", {"a": 1})
        checkpoints.save_checkpoint({"state_dict": {}}, str(tmp_path), "model.pth.tar-1")
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "results.json") == expected
    assert mode_of(tmp_path / "model.pth.tar-1") == expected
    assert mode_of(tmp_path / "checkpoint") == expected


def test_a_replaced_file_keeps_its_mode(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("old\n")
    os.chmod(path, 0o640)
    fileio.atomic_write_text(path, "new\n")
    assert path.read_text() == "new\n" and mode_of(path) == 0o640


def test_disk_full_is_one_line_naming_the_file_and_the_space_and_the_old_file_is_kept(tmp_path, monkeypatch):
    path = tmp_path / "model.pth.tar-1"
    path.write_bytes(b"old checkpoint")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(fileio.WriteError) as caught:
        fileio.atomic_torch_save({"x": torch.zeros(3)}, str(path))
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and "no space left" in message and " free in " in message
    assert path.read_bytes() == b"old checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth.tar-1"]  # no temporary file left behind


def test_tables_under_a_file_size_limit_keep_the_earlier_tables_whole(tmp_path):
    """``ulimit -f 0`` makes every write fail: the existing tables stay as they were, with one error line."""
    records = tmp_path / "out"
    write(records, "a/base", "DescribableTextures", "CoOp", 1, 80.0, "base")
    write(records, "a/new", "DescribableTextures", "CoOp", 1, 60.0, "new")
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "base2new.md").write_text("earlier table\n")
    (tables / "base2new.csv").write_text("earlier csv\n")
    script = (f"ulimit -f 0; exec {sys.executable} scripts/tables.py {records} --out {tables} --no-figures "
              "--protocol base2new")
    result = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "base2new.md" in error_lines[0] and "ulimit -f" in error_lines[0]
    assert "Traceback" not in result.stderr
    assert (tables / "base2new.md").read_text() == "earlier table\n"
    assert (tables / "base2new.csv").read_text() == "earlier csv\n"


@pytest.mark.integration
def test_a_checkpoint_that_cannot_be_written_is_one_line_and_resume_then_works(tmp_path):
    """A tiny CoOp checkpoint is ~19 KB, its log and config under 12 KB: ``ulimit -f 12`` fails the checkpoint."""
    root, clip_file = pets_setup(tmp_path)
    out = tmp_path / "run"
    train = [sys.executable, "train.py", "--root", str(root), "--seed", "1", "--trainer", "CoOp",
             "--dataset-config-file", "configs/datasets/oxford_pets.yaml",
             "--config-file", "configs/trainers/CoOp/vit_b16_ctxv1.yaml", "--output-dir", str(out),
             *tiny_overrides(clip_file, epochs=1)]
    limited = run_command(["bash", "-c", "ulimit -f 12; exec \"$@\"", "bash", *train], check=False)
    assert limited.returncode == 2, limited.stderr[-2000:]
    assert "Traceback" not in limited.stderr
    line = limited.stderr.strip().splitlines()[-1]
    assert line.startswith("error: Cannot write ") and "model.pth.tar-1" in line and "ulimit -f" in line
    assert not (out / "prompt_learner" / "model.pth.tar-1").exists()
    assert not [p for p in (out / "prompt_learner").iterdir() if p.name.endswith(".tmp")]
    again = run_command(train)
    assert (out / "prompt_learner" / "model.pth.tar-1").exists() and (out / "results.json").exists(), again.stdout
