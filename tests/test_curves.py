"""``scripts/curves.py``: epoch lines read from training logs, averaged per label over the cells every label has,
run as a user runs it (a fresh process) on folders laid out as a sweep lays them out."""
import json
import os
import sys

import pytest
from fixtures import REPO, run_command

sys.path.insert(0, os.path.join(REPO, "scripts"))
import curves  # noqa: E402


def write_run(root, trainer, fold, dataset, seed, epochs, name="log.txt"):
    """A training log whose epoch ``e`` line logs ``track_new_acc`` = ``epochs[e]`` (epoch 0: the tracked line,
    with a zero-shot accuracy of 50)."""
    folder = os.path.join(root, f"fold{fold}", "base2new", "train_base", dataset, "shots_16", trainer, "world",
                          f"seed{seed}")
    os.makedirs(folder, exist_ok=True)
    last = max(epochs)
    lines = ["Loading trainer: x"]
    for epoch, value in sorted(epochs.items()):
        if epoch == 0:
            lines.append(f"epoch [0/{last}] tracked: track_base_acc 90.0000 track_new_acc {value:.4f} "
                         f"zs_new_acc 50.0000")
        else:
            lines.append(f"epoch [{epoch}/{last}] averages: loss 1.0000 acc 80.0000 track_new_acc {value:.4f}")
    with open(os.path.join(folder, name), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return folder


def test_parse_log_reads_every_epoch_line_and_a_later_line_wins():
    text = ("epoch [0/2] tracked: track_new_acc 60.0 zs_new_acc 55.0\nnoise epoch [1/2] averages: loss 9\n"
            "epoch [1/2] averages: loss 1.5 track_new_acc 58.0\nepoch [1/2] averages: loss 1.25 bad x\n")
    assert curves.parse_log(text) == {0: {"track_new_acc": 60.0, "zs_new_acc": 55.0},
                                      1: {"loss": 1.25, "track_new_acc": 58.0}}


def test_cell_of_names_fold_dataset_and_seed():
    path = os.path.join("x", "fold2", "base2new", "train_base", "world_signs", "shots_16", "CoOp", "world", "seed3")
    assert curves.cell_of(path) == ("fold2", "world_signs", "seed3")
    assert curves.cell_of(os.path.join("x", "test_new", "world", "seed1")) is None


def test_curves_average_over_the_shared_cells_in_a_fresh_process(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    write_run(a, "CoOp", 1, "world", 1, {0: 60, 1: 50, 2: 40})
    write_run(a, "CoOp", 2, "world", 1, {0: 70, 1: 66, 2: 62})
    write_run(a, "CoOp", 1, "world_signs", 1, {0: 10, 1: 10, 2: 10})  # b has no such cell: left out
    write_run(b, "KgCoOp", 1, "world", 1, {0: 60, 1: 58, 2: 56})
    resumed = write_run(b, "KgCoOp", 2, "world", 1, {0: 70, 1: 0, 2: 0})
    with open(os.path.join(resumed, "log.txt-2026-12-07-10-00-00"), "w") as handle:  # the resumed run's later log
        handle.write("epoch [1/2] averages: track_new_acc 68.0000\nepoch [2/2] averages: track_new_acc 66.0000\n")
    out = tmp_path / "figures" / "forgetting"
    result = run_command([sys.executable, "scripts/curves.py", "--runs", f"CoOp={a}", "--runs", f"KgCoOp={b}",
                          "--epochs", "0", "2", "--keys", "track_new_acc", "--out", str(out)])
    record = json.loads((tmp_path / "figures" / "forgetting.json").read_text())
    assert record["cells"] == [["fold1", "world", "seed1"], ["fold2", "world", "seed1"]]
    coop, kgcoop = record["curves"]["CoOp"], record["curves"]["KgCoOp"]
    assert [coop[e]["track_new_acc"]["mean"] for e in "012"] == [65, 58, 51]
    assert [kgcoop[e]["track_new_acc"]["mean"] for e in "012"] == [65, 63, 61]
    assert coop["2"]["track_new_acc"]["sd"] == pytest.approx(11)
    table = (tmp_path / "figures" / "forgetting.md").read_text()
    assert "| 2 | 51.000 |" in table and "| 2 | 61.000 |" in table and "| zero-shot | 50.000 |" in table
    assert "| 1 |" not in table and "2 (fold, dataset, seed) cells" in table
    assert (tmp_path / "figures" / "forgetting.png").read_bytes()[:4] == b"\x89PNG"
    assert "Written:" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--runs", "nolabel"], "LABEL=FOLDER"),
    (["--runs", "A={missing}"], "is not a folder"),
    (["--runs", "A={empty}"], "no training log"),
    (["--runs", "A={a}", "--runs", "A={a}"], "twice"),
    (["--runs", "A={a}", "--runs", "B={b}"], "share no"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    paths = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "a": tmp_path / "a", "b": tmp_path / "b"}
    os.makedirs(paths["empty"])
    write_run(str(paths["a"]), "CoOp", 1, "world", 1, {0: 1, 1: 2})
    write_run(str(paths["b"]), "CoOp", 2, "world", 1, {0: 1, 1: 2})
    args = [arg.format(**paths) for arg in args]
    result = run_command([sys.executable, "scripts/curves.py", *args, "--out", str(tmp_path / "o")], check=False)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o.md").exists()
