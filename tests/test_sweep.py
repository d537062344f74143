"""The sweep command's grid, folder names and ranking, on results records written by the test (no Dassl)."""
import json
import os
import statistics
import subprocess
import sys

import pytest
import suite  # noqa: E402
import sweep  # noqa: E402


def hm(base, new):
    return 2 * base * new / (base + new)


def test_grid_settings_and_names():
    grid = sweep.parse_grid(["TRAINER.DUALMIPROMPT.W_ALIGN=0.0,8.0", "OPTIM.LR=0.01,0.02"])
    assert grid == [("TRAINER.DUALMIPROMPT.W_ALIGN", ["0.0", "8.0"]), ("OPTIM.LR", ["0.01", "0.02"])]
    combos = sweep.settings(grid)
    assert len(combos) == 4 and combos[0] == [("TRAINER.DUALMIPROMPT.W_ALIGN", "0.0"), ("OPTIM.LR", "0.01")]
    assert sweep.setting_name(combos[-1]) == "W_ALIGN=8.0,LR=0.02"
    assert sweep.setting_name([]) == "default" and sweep.settings([]) == [[]]
    assert sweep.setting_name([("TRAINER.X.CTX_INIT", "a photo/of")]) == "CTX_INIT=a_photo_of"
    for bad in ("W_ALIGN", "w.x=1", "TRAINER.X.Y=", "=1"):
        with pytest.raises(suite.SuiteError, match="--grid takes"):
            sweep.parse_grid([bad])
    with pytest.raises(suite.SuiteError, match="twice"):
        sweep.parse_grid(["OPTIM.LR=1.0", "OPTIM.LR=2.0"])
    tries = sweep.settings([], ["TRAINER.D.W_ALIGN=8.0", "TRAINER.D.W_ALIGN=8.0,TRAINER.D.TEMPLATES=ensemble"])
    assert tries == [[], [("TRAINER.D.W_ALIGN", "8.0")], [("TRAINER.D.W_ALIGN", "8.0"), ("TRAINER.D.TEMPLATES", "ensemble")]]
    assert [sweep.setting_name(t) for t in tries] == ["default", "W_ALIGN=8.0", "W_ALIGN=8.0,TEMPLATES=ensemble"]
    with pytest.raises(suite.SuiteError, match="one value per key"):
        sweep.settings([], ["OPTIM.LR=1.0,2.0"])


def test_ranking_against_a_hand_computation(tmp_path):
    # setting -> fold -> dataset -> (base, new); one seed
    values = {
        "ref": {1: {"d1": (80.0, 60.0), "d2": (50.0, 40.0)}, 2: {"d1": (78.0, 62.0), "d2": (52.0, 44.0)}},
        "better": {1: {"d1": (81.0, 64.0), "d2": (51.0, 43.0)}, 2: {"d1": (79.0, 63.0), "d2": (53.0, 45.0)}},
    }
    results = {}
    for name, folds in values.items():
        results[name] = {}
        for fold, by_dataset in folds.items():
            output = tmp_path / name / f"fold{fold}"
            for dataset, pair in by_dataset.items():
                for folder, accuracy in zip(suite.run_dirs(str(output), dataset, "16", "T", 1, config=""), pair):
                    folder = folder.replace(os.sep + "?" + os.sep, os.sep + "cfg" + os.sep)
                    os.makedirs(folder)
                    with open(os.path.join(folder, "results.json"), "w") as handle:
                        json.dump({"accuracy": accuracy, "split": f"val_fold{fold}"}, handle)
            results[name][fold] = suite.collect(str(output), "16", ["T"], ["d1", "d2"], [1], config="")["T"]
    rows = sweep.rank(results, ["ref", "better"], ["d1", "d2"], [1], [1, 2])
    assert [row["setting"] for row in rows] == ["better", "ref"]
    cells = [(f, d) for f in (1, 2) for d in ("d1", "d2")]
    for row in rows:
        his = [hm(*values[row["setting"]][f][d]) for f, d in cells]
        assert row["hm"] == pytest.approx(statistics.fmean(his))
        assert row["base"] == pytest.approx(statistics.fmean(values[row["setting"]][f][d][0] for f, d in cells))
        assert (row["cells"], row["expected_cells"], row["ranked_on"]) == (4, 4, 4)
    diffs = [hm(*values["better"][f][d]) - hm(*values["ref"][f][d]) for f, d in cells]
    assert rows[0]["vs_reference"]["mean"] == pytest.approx(statistics.fmean(diffs))
    assert rows[0]["vs_reference"]["n"] == 4 and rows[1]["vs_reference"] is None
    text = sweep.markdown(rows, "ref", "footer")
    assert "| 2 | ref |" in text and "reference" in text
    d2 = rows[0]["datasets"]["d2"]  # "better" on d2, over folds 1 and 2
    assert d2["new"] == pytest.approx((43.0 + 45.0) / 2) and d2["hm"] == pytest.approx((hm(51, 43) + hm(53, 45)) / 2)
    assert f"| better | {(hm(81, 64) + hm(79, 63)) / 2:.2f} | {(hm(51, 43) + hm(53, 45)) / 2:.2f} |" in text
    assert "| ref | 61.00 | 42.00 |" in text  # pseudo-new per dataset
    # A setting whose hard cell failed is ranked on the cells both settings have, never on easier ones.
    del results["better"][2]["d2"]
    rows = {row["setting"]: row for row in sweep.rank(results, ["ref", "better"], ["d1", "d2"], [1], [1, 2])}
    shared = [(1, "d1"), (1, "d2"), (2, "d1")]
    assert rows["better"]["cells"] == 3 and rows["ref"]["cells"] == 4 and rows["ref"]["ranked_on"] == 3
    assert rows["ref"]["hm"] == pytest.approx(statistics.fmean(hm(*values["ref"][f][d]) for f, d in shared))
    # A setting whose every run failed is listed last, without numbers, and does not blank the others.
    results["broken"] = {1: {}, 2: {}}
    rows = sweep.rank(results, ["ref", "better", "broken"], ["d1", "d2"], [1], [1, 2])
    assert [row["setting"] for row in rows] == ["better", "ref", "broken"]
    assert rows[0]["ranked_on"] == 3 and rows[0]["hm"] == pytest.approx(
        statistics.fmean(hm(*values["better"][f][d]) for f, d in shared))
    assert (rows[2]["cells"], rows[2]["hm"], rows[2]["vs_reference"]) == (0, None, None)
    text = sweep.markdown(rows, "ref", "footer")
    assert "| 3 | broken | - | - | - | - | 0/4 |" in text and "| broken | - | - |" in text
    # With the reference itself broken, the others are still ranked, without a difference to it.
    rows = sweep.rank({**results, "ref": {1: {}, 2: {}}}, ["ref", "better"], ["d1", "d2"], [1], [1, 2])
    assert [(row["setting"], row["vs_reference"]) for row in rows] == [("better", None), ("ref", None)]
    assert rows[0]["hm"] is not None


def test_command_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("OUTPUT", str(tmp_path))  # --no-run: nothing would run even if a check let a line through
    for argv in (["--grid", "lr=1"], ["--folds", "0"], ["--folds", "3"], ["--val-folds", "1"],
                 ["--", "DATASET.VAL_FOLD", "1"], ["--", "OPTIM.LR"], ["--seeds", "1", "1"]):
        assert sweep.main(["CoOp", "--no-run", *argv]) == 2, argv
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("argv, expected", [
    (["CoOpp"], "unknown trainer 'CoOpp' (the trainer argument). Did you mean CoOp "),
    (["NoSuch"], "unknown trainer 'NoSuch'"),
    (["CoOp", "--datasets", "world", "oxford_pet"], "unknown dataset 'oxford_pet' (--datasets). Did you mean "
                                                    "oxford_pets"),
])
def test_an_unknown_trainer_or_dataset_is_an_error_with_suggestions(tmp_path, argv, expected):
    result = subprocess.run([sys.executable, "scripts/sweep.py", *argv, "--no-run"], cwd=suite.REPO,
                            env={**os.environ, "OUTPUT": str(tmp_path)}, capture_output=True, text=True)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert expected in result.stderr
    assert os.listdir(tmp_path) == []


def write_fold_results(output, trainer, fold, dataset, pair):
    for folder, accuracy in zip(suite.run_dirs(str(output), dataset, "16", trainer, 1, config=""), pair):
        folder = folder.replace(os.sep + "?" + os.sep, os.sep + "world" + os.sep)
        os.makedirs(folder)
        with open(os.path.join(folder, "results.json"), "w") as handle:
            json.dump({"accuracy": accuracy, "split": f"val_fold{fold}"}, handle)


def test_a_trainer_beside_the_settings_is_ranked_on_the_same_cells_in_a_fresh_process(tmp_path):
    """``--beside CoOp``: CoOp's default runs, in the folder its own sweep uses, ranked as a row that is not a
    candidate, with its paired difference to the swept trainer's reference."""
    root = tmp_path / "sweep"
    ours = {1: (80.0, 70.0), 2: (82.0, 66.0)}
    theirs = {1: (84.0, 60.0), 2: (81.0, 62.0)}
    for fold in (1, 2):
        write_fold_results(root / "DualMIPrompt" / "default" / f"fold{fold}", "DualMIPrompt", fold, "world", ours[fold])
        write_fold_results(root / "CoOp" / "default" / f"fold{fold}", "CoOp", fold, "world", theirs[fold])
    out = tmp_path / "table"
    result = subprocess.run([sys.executable, "scripts/sweep.py", "DualMIPrompt", "--beside", "CoOp", "--datasets",
                             "world", "--no-run", "--out", str(out)], cwd=suite.REPO,
                            env={**os.environ, "OUTPUT": str(tmp_path)}, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    numbers = json.loads((out / "sweep.json").read_text())
    rows = {row["setting"]: row for row in numbers["ranking"]}
    assert set(rows) == {"default", "CoOp (beside)"} and numbers["beside"] == ["CoOp"]
    coop = rows["CoOp (beside)"]
    assert coop["hm"] == pytest.approx(statistics.fmean(hm(*theirs[f]) for f in (1, 2)))
    assert coop["vs_reference"]["mean"] == pytest.approx(
        statistics.fmean(hm(*theirs[f]) - hm(*ours[f]) for f in (1, 2)))
    assert "| CoOp (beside) |" in (out / "sweep.md").read_text()


@pytest.mark.parametrize("beside, expected", [(["DualMIPrompt"], "--beside names other trainers"),
                                              (["CoOp", "CoOp"], "--beside names other trainers"),
                                              (["CoOpp"], "unknown trainer 'CoOpp' (--beside)")])
def test_beside_errors(tmp_path, beside, expected):
    result = subprocess.run([sys.executable, "scripts/sweep.py", "DualMIPrompt", "--beside", *beside, "--no-run"],
                            cwd=suite.REPO, env={**os.environ, "OUTPUT": str(tmp_path)}, capture_output=True, text=True)
    assert result.returncode == 2 and expected in result.stderr and "Traceback" not in result.stderr
    assert os.listdir(tmp_path) == []
