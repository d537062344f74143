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
