"""``python -m datasets.prepare`` run as a user runs it, with a --root it cannot use: one line, exit 2."""
import sys

import pytest
from fixtures import can_mount_read_only, read_only, run_command


def prepare(*args):
    return [sys.executable, "-m", "datasets.prepare", *map(str, args)]


def assert_one_error_line(result, expected):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith("error: ")
    assert expected in result.stderr


@pytest.mark.parametrize("check", [False, True])
def test_a_root_that_is_a_file(tmp_path, check):
    root = tmp_path / "data"
    root.write_text("not a folder\n")
    result = run_command(prepare("dtd", "--root", root, *(["--check"] if check else [])), check=False)
    assert_one_error_line(result, f"--root {root} is a file, not a folder")
    assert root.read_text() == "not a folder\n"


def test_a_read_only_root(tmp_path):
    if not can_mount_read_only(tmp_path):
        pytest.skip("no user namespaces here to mount a folder read-only")
    root = tmp_path / "data"
    root.mkdir()
    result = run_command(read_only(root, prepare("dtd", "--root", root)), check=False)
    assert_one_error_line(result, f"cannot write to --root {root}: Read-only file system. Preparing a dataset "
                                  "writes there")


def test_a_split_file_above_the_cap_is_refused_unread_by_training_and_by_the_check(tmp_path):
    """The cap is settable ($DATASETS_MAX_SPLIT_SIZE); a valid split file above it is refused in one line naming it,
    where it used to be parsed whatever its size (``--check`` said "ok")."""
    from fixtures import pets_setup, tiny_overrides

    root, clip_file = pets_setup(tmp_path)
    split = root / "oxford_pets" / "split_zhou_OxfordPets.json"
    assert split.stat().st_size > 1024
    env = {"DATASETS_MAX_SPLIT_SIZE": "1K"}
    train = [sys.executable, "train.py", "--trainer", "CoOp", "--config-file", "configs/trainers/CoOp/vit_b16.yaml",
             "--dataset-config-file", "configs/datasets/oxford_pets.yaml", "--root", root,
             "--output-dir", tmp_path / "out", *tiny_overrides(clip_file, epochs=1)]
    result = run_command(train, env=env, check=False)
    assert_one_error_line(result, f"Split file {split} is ")
    assert "above the cap on split files of 1.0 KiB ($DATASETS_MAX_SPLIT_SIZE)" in result.stderr
    checked = run_command(prepare("oxford_pets", "--check", "--root", root), env=env, check=False)
    assert checked.returncode == 1 and "above the cap on split files" in checked.stdout + checked.stderr
    assert run_command(prepare("oxford_pets", "--check", "--root", root), check=False).returncode == 0
