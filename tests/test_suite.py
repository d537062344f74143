"""The suite command's statistics, on results records written by the test (no Dassl): per dataset, the average,
the per-seed suite HM with its standard error, and the paired differences, each against a computation here."""
import json
import math
import os
import statistics
import subprocess
import sys

import pytest
import suite  # noqa: E402


def hm(base, new):
    return 2 * base * new / (base + new)


def write_pair(output, dataset, trainer, seed, base, new, shots=16):
    for folder, accuracy in zip(suite.run_dirs(str(output), dataset, shots, trainer, seed), (base, new)):
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "results.json"), "w") as handle:
            json.dump({"accuracy": accuracy}, handle)


# (trainer, dataset, seed) -> (base, new)
RUNS = {
    ("A", "d1", 1): (80.0, 60.0), ("A", "d1", 2): (82.0, 58.0),
    ("A", "d2", 1): (50.0, 40.0), ("A", "d2", 2): (54.0, 42.0),
    ("B", "d1", 1): (78.0, 64.0), ("B", "d1", 2): (79.0, 66.0),
    ("B", "d2", 1): (49.0, 45.0), ("B", "d2", 2): (50.0, 41.0),
}


@pytest.fixture
def numbers(tmp_path):
    for (trainer, dataset, seed), (base, new) in RUNS.items():
        write_pair(tmp_path, dataset, trainer, seed, base, new)
    found = suite.collect(str(tmp_path), "16", ["A", "B"], ["d1", "d2"], [1, 2])
    return suite.summary(found, ["A", "B"], ["d1", "d2"], [1, 2])


def test_per_dataset_and_average_rows(numbers):
    a = numbers["trainers"]["A"]
    d1 = a["datasets"]["d1"]
    assert d1["base"]["mean"] == pytest.approx(81.0) and d1["base"]["std"] == pytest.approx(1.0)
    assert d1["new"]["mean"] == pytest.approx(59.0) and d1["new"]["std"] == pytest.approx(1.0)
    assert d1["hm"] == pytest.approx(hm(81.0, 59.0))  # HM of the means, as the papers
    assert d1["hm_std"] == pytest.approx(statistics.pstdev([hm(80, 60), hm(82, 58)]))
    avg = a["average"]
    base_by_seed = [(80 + 50) / 2, (82 + 54) / 2]
    new_by_seed = [(60 + 40) / 2, (58 + 42) / 2]
    assert avg["base"]["mean"] == pytest.approx(statistics.fmean(base_by_seed))
    assert avg["base"]["std"] == pytest.approx(statistics.pstdev(base_by_seed))
    assert avg["hm"] == pytest.approx(hm(statistics.fmean(base_by_seed), statistics.fmean(new_by_seed)))
    assert a["complete"] is True


def test_suite_hm_per_seed_and_its_standard_error(numbers):
    per_seed = {s: statistics.fmean(hm(*RUNS[("B", d, s)]) for d in ("d1", "d2")) for s in (1, 2)}
    b = numbers["trainers"]["B"]
    assert b["suite_hm_per_seed"] == {str(s): pytest.approx(v) for s, v in per_seed.items()}
    assert b["suite_hm_se"] == pytest.approx(statistics.stdev(per_seed.values()) / math.sqrt(2))


def test_paired_difference_is_over_the_seed_dataset_cells(numbers):
    (pair,) = numbers["pairs"]
    assert (pair["a"], pair["b"]) == ("B", "A")
    cells = [(d, s) for s in (1, 2) for d in ("d1", "d2")]
    diffs = [hm(*RUNS[("B", d, s)]) - hm(*RUNS[("A", d, s)]) for d, s in cells]
    assert pair["n"] == 4
    assert pair["mean"] == pytest.approx(statistics.fmean(diffs))
    half = 3.182446305284263 * statistics.stdev(diffs) / 2  # t(0.975, 3) * sd / sqrt(4)
    assert (pair["low"], pair["high"]) == (pytest.approx(pair["mean"] - half), pytest.approx(pair["mean"] + half))
    for index, part in enumerate(("base", "new")):  # the same over the cells' base and new accuracy
        diffs = [RUNS[("B", d, s)][index] - RUNS[("A", d, s)][index] for d, s in cells]
        half = 3.182446305284263 * statistics.stdev(diffs) / 2
        assert pair[part]["n"] == 4 and pair[part]["mean"] == pytest.approx(statistics.fmean(diffs))
        assert pair[part]["low"] == pytest.approx(statistics.fmean(diffs) - half)
    text = suite.markdown(numbers, ["A", "B"], ["d1", "d2"], [1, 2], "footer")
    new, base = pair["new"], pair["base"]
    assert (f"| {pair['n']} | no | {new['mean']:+.2f} [{new['low']:+.2f}, {new['high']:+.2f}] | "
            f"{base['mean']:+.2f} [{base['low']:+.2f}, {base['high']:+.2f}] |") in text


def test_a_missing_run_leaves_the_average_incomplete_and_out_of_the_pairs(tmp_path):
    for (trainer, dataset, seed), (base, new) in RUNS.items():
        if (trainer, dataset, seed) != ("A", "d2", 2):
            write_pair(tmp_path, dataset, trainer, seed, base, new)
    # An unusable record counts as missing, never as a number.
    write_pair(tmp_path, "d2", "A", 2, "75.8", 40.0)
    numbers = suite.summary(suite.collect(str(tmp_path), "16", ["A", "B"], ["d1", "d2"], [1, 2]), ["A", "B"],
                            ["d1", "d2"], [1, 2])
    a = numbers["trainers"]["A"]
    assert a["complete"] is False and a["average"]["seeds"] == [1]
    assert a["suite_hm_se"] is None
    assert numbers["pairs"][0]["n"] == 3
    text = suite.markdown(numbers, ["A", "B"], ["d1", "d2"], [1, 2], "footer")
    assert "| d2 | A | 50.00 | 40.00 | 44.44 | 1/2 |" in text
    assert "| **average (2)** | A | 65.00 | 50.00 | 56.52 | 1/2 |" in text


def test_command_line_settings(tmp_path):
    def parse(argv):
        return suite.parse_command_line(suite.build_parser(), argv)

    assert suite.resolve(parse([])) == (suite.SUITE, (1, 2, 3), [])
    assert suite.resolve(parse(["--quick"]))[:2] == (suite.QUICK_DATASETS, (1,))
    assert suite.resolve(parse(["--image-seed", "2", "--", "OPTIM.MAX_EPOCH", "1"]))[2] == ["OPTIM.MAX_EPOCH", "1"]
    for bad, message in ((["--datasets", "nowhere"], "world's datasets"), (["--datasets", "world_sketch"], "world's"),
                         (["--seeds", "1", "1"], "once"), (["--image-seed", "-1"], "zero or positive"),
                         (["--image-seed", "0", "2", "0"], "image seed may be named once"),
                         (["--", "OPTIM.LR"], "KEY VALUE"), (["--", "DATASET.WORLD_IMAGE_SEED", "1"], "--image-seed"),
                         (["--", "DATASET.VAL_FOLD", "1"], "sweep")):
        with pytest.raises(suite.SuiteError, match=message):
            suite.resolve(parse(bad))
    assert suite.main(["--datasets", "nowhere"]) == 2


def test_runs_of_other_settings_live_apart(monkeypatch, tmp_path):
    monkeypatch.setenv("OUTPUT", str(tmp_path))
    plain = suite.output_root()
    assert plain == str(tmp_path)
    assert suite.output_root(2) == str(tmp_path / "imageseed2")
    one, other = suite.output_root(0, ["OPTIM.LR", "0.1"]), suite.output_root(0, ["OPTIM.LR", "0.2"])
    assert len({plain, one, other}) == 3 and os.path.dirname(one) == plain
    assert suite.output_root(0, ["OPTIM.LR", "0.1"]) == one
    monkeypatch.setenv("SHOTS", "four")
    with pytest.raises(suite.SuiteError, match="SHOTS"):
        suite.resolve(suite.parse_command_line(suite.build_parser(), []))


def test_ranks_share_the_mean_rank_on_ties():
    assert suite.ranks([5.0, 7.0, 5.0, 1.0]) == [2.5, 1.0, 2.5, 4.0]


def test_the_suite_beside_the_published_averages(tmp_path):
    runs = {("ZeroshotCLIP", "d1"): (50.0, 40.0), ("ZeroshotCLIP", "d2"): (30.0, 20.0),
            ("CoOp", "d1"): (70.0, 45.0), ("CoOp", "d2"): (40.0, 18.0),
            ("MaPLe", "d1"): (60.0, 44.0), ("MaPLe", "d2"): (35.0, 22.0),
            ("Mine", "d1"): (90.0, 90.0), ("Mine", "d2"): (90.0, 90.0)}
    trainers = ["ZeroshotCLIP", "CoOp", "MaPLe", "Mine"]
    for (trainer, dataset), (base, new) in runs.items():
        write_pair(tmp_path, dataset, trainer, 1, base, new)
    numbers = suite.summary(suite.collect(str(tmp_path), "16", trainers, ["d1", "d2"], [1]), trainers, ["d1", "d2"], [1])
    found = suite.beside_published(numbers, trainers, ["d1", "d2"])
    rows = {row["trainer"]: row for row in found["rows"]}
    assert list(rows) == ["ZeroshotCLIP", "CoOp", "MaPLe"]  # Mine has no published average
    assert rows["CoOp"]["suite"]["hm"] == pytest.approx(hm(55.0, 31.5))
    assert rows["CoOp"]["published"] == {"base": 82.69, "new": 63.22, "hm": 71.66, "rank": 3.0}
    # new-class accuracy minus zero-shot CLIP's: suite averages 31.5 - 30 and 33 - 30; published 63.22 - 74.22
    assert rows["CoOp"]["new_minus_zero_shot"] == {"suite": pytest.approx(1.5), "published": pytest.approx(-11.0)}
    assert rows["MaPLe"]["new_minus_zero_shot"]["suite"] == pytest.approx(3.0)
    # CoOp falls below zero-shot CLIP's new accuracy on d2 only; published, on each of the 11 datasets (MaPLe on 4:
    # StanfordCars, OxfordFlowers, FGVCAircraft, DTD)
    assert rows["CoOp"]["new_below_zero_shot"] == {"suite": [1, 2], "published": [11, 11]}
    assert rows["MaPLe"]["new_below_zero_shot"] == {"suite": [0, 2], "published": [4, 11]}
    assert [rows[t]["suite"]["rank"] for t in rows] == [3.0, 1.0, 2.0]
    assert [rows[t]["published"]["rank"] for t in rows] == [2.0, 3.0, 1.0]  # 71.70, 71.66, 78.55
    assert found["spearman"] == pytest.approx(-0.5)  # ranks (3, 1, 2) against (2, 3, 1)
    table = "\n".join(suite.published_lines(found))
    assert "| CoOp | 40.06 | 71.66 | 1 | 3 | +1.50 | -11.00 | 1/2 | 11/11 |" in table
    assert "over 3 trainers: -0.50." in table


def test_without_zero_shot_clip_there_is_no_gap_and_without_published_numbers_no_table(tmp_path, numbers):
    for dataset, (base, new) in {"d1": (70.0, 45.0), "d2": (40.0, 18.0)}.items():
        write_pair(tmp_path, dataset, "CoOp", 1, base, new)
    alone = suite.summary(suite.collect(str(tmp_path), "16", ["CoOp"], ["d1", "d2"], [1]), ["CoOp"], ["d1", "d2"], [1])
    (row,) = suite.beside_published(alone, ["CoOp"], ["d1", "d2"])["rows"]
    assert row["new_minus_zero_shot"] is None and row["new_below_zero_shot"] is None
    assert suite.beside_published(numbers, ["A", "B"], ["d1", "d2"]) == {"rows": [], "spearman": None}
    assert suite.published_lines({"rows": [], "spearman": None}) == []


@pytest.mark.parametrize("argv, expected", [
    (["--trainers", "NoSuch"], "unknown trainer 'NoSuch' (--trainers)."),
    (["--trainers", "CoOp", "DualMIPromt"], "unknown trainer 'DualMIPromt' (--trainers). Did you mean DualMIPrompt"),
    (["--trainers", "coop"], "Did you mean CoOp?"),
    (["--datasets", "wrld"], "Did you mean world "),
])
def test_an_unknown_trainer_or_dataset_is_an_error_with_suggestions(tmp_path, argv, expected):
    """Run as a user runs it: a typo exits 2 with one line, and no table is written (it used to exit 0)."""
    result = subprocess.run([sys.executable, "scripts/suite.py", *argv, "--no-run", "--out", str(tmp_path / "t")],
                            cwd=suite.REPO, env={**os.environ, "OUTPUT": str(tmp_path / "o")}, capture_output=True,
                            text=True)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert expected in result.stderr
    assert not (tmp_path / "t").exists() and not (tmp_path / "o").exists()


def test_several_image_seeds_pool_their_cells(tmp_path):
    """Run as a user runs it: ``--image-seed 0 1 --no-run`` reads each image seed's runs from its own folder and
    pools their cells, a seed being ``<image seed>/<seed>``; one image seed keeps its own folder and table."""
    datasets, trainers = ["world_shapes", "world_textures"], ["CoOp", "KgCoOp"]
    runs = {}
    for image_seed in (0, 1):
        for t, trainer in enumerate(trainers):
            for d, dataset in enumerate(datasets):
                for seed in (1, 2):
                    base, new = 60.0 + 7 * t + 3 * d + seed + 2 * image_seed, 50.0 - 4 * t * seed + d + 5 * image_seed
                    runs[(image_seed, trainer, dataset, seed)] = (base, new)
                    output = str(tmp_path) if image_seed == 0 else str(tmp_path / f"imageseed{image_seed}")
                    write_pair(output, dataset, trainer, seed, base, new)

    def run(*image_seeds):  # none: the option left out
        draws = ["--image-seed", *map(str, image_seeds)] if image_seeds else []
        return subprocess.run([sys.executable, "scripts/suite.py", "--no-run", "--trainers", *trainers, "--datasets",
                               *datasets, "--seeds", "1", "2", *draws], cwd=suite.REPO,
                              env={**os.environ, "OUTPUT": str(tmp_path)}, capture_output=True, text=True)

    result = run(1, 0)  # in any order: the same folder and seeds
    assert result.returncode == 0, result.stdout + result.stderr
    with open(tmp_path / "suite_imageseeds_0_1" / "suite.json") as handle:
        record = json.load(handle)
    assert record["image_seeds"] == [0, 1] and record["image_seed"] is None
    assert record["trainers"]["CoOp"]["average"]["seeds"] == ["0/1", "0/2", "1/1", "1/2"]
    (pair,) = record["pairs"]
    cells = [(i, d, s) for i in (0, 1) for d in datasets for s in (1, 2)]
    diffs = [hm(*runs[(i, "KgCoOp", d, s)]) - hm(*runs[(i, "CoOp", d, s)]) for i, d, s in cells]
    assert (pair["a"], pair["b"], pair["n"]) == ("KgCoOp", "CoOp", 8)
    assert pair["mean"] == pytest.approx(statistics.fmean(diffs))
    new_base = statistics.fmean(runs[(i, "CoOp", "world_shapes", s)][1] for i in (0, 1) for s in (1, 2))
    assert record["trainers"]["CoOp"]["datasets"]["world_shapes"]["new"]["mean"] == pytest.approx(new_base)
    assert "image seeds 0 1, their cells pooled" in result.stdout

    result = run(1)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(tmp_path / "imageseed1" / "suite" / "suite.json") as handle:
        record = json.load(handle)
    assert record["image_seed"] == 1 and record["overrides"] == ["DATASET.WORLD_IMAGE_SEED", "1"]
    assert record["pairs"][0]["n"] == 4
    diffs = [hm(*runs[(1, "KgCoOp", d, s)]) - hm(*runs[(1, "CoOp", d, s)]) for d in datasets for s in (1, 2)]
    assert record["pairs"][0]["mean"] == pytest.approx(statistics.fmean(diffs))

    result = run()  # image seed 0, in the folder the suite has always used
    assert result.returncode == 0, result.stdout + result.stderr
    with open(tmp_path / "suite" / "suite.json") as handle:
        record = json.load(handle)
    assert (record["image_seed"], record["image_seeds"], record["overrides"]) == (0, [0], [])
    diffs = [hm(*runs[(0, "KgCoOp", d, s)]) - hm(*runs[(0, "CoOp", d, s)]) for d in datasets for s in (1, 2)]
    assert record["pairs"][0]["mean"] == pytest.approx(statistics.fmean(diffs))


def test_a_failed_run_of_pooled_draws_names_its_image_seed(tmp_path, capsys):
    """Pooled draws share their cells' names, so a failure says which draw it was in (image seed 0 included)."""
    failures = [{"dataset": "world", "trainer": "CoOp", "seed": 1, "log": "a.log", "image_seed": 0},
                {"dataset": "world", "trainer": "CoOp", "seed": 1, "log": "b.log", "image_seed": 2},
                {"dataset": "world", "trainer": "KgCoOp", "seed": 3, "log": "c.log"}]
    assert suite.report(str(tmp_path), "suite", "table", {}, failures) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[1:] == ["  world CoOp seed 1 (image seed 0): see a.log", "  world CoOp seed 1 (image seed 2): see b.log",
                         "  world KgCoOp seed 3: see c.log"]
