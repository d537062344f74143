"""The tables tool on results records written by the test: every number against a computation written here."""
import csv
import math
import os

import pytest
import tables

from trainers.records import RECORD_NAME, SUMMARY_NAME, write_record  # noqa: E402
from trainers.results import builders, published, reading, render, statistics


def hm(base, new):
    return 2 * base * new / (base + new)


def mean(values):
    return sum(values) / len(values)


def pstd(values):
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def write(root, folder, dataset, trainer, seed, accuracy, subsample="all", shots=16, protocol="base2new",
          config="cfg", **extra):
    record = dict(
        dataset=dataset, trainer=trainer, config=config, protocol=protocol, backbone="ViT-B/16", seed=seed,
        subsample=subsample, shots=shots, split="test", epoch=2, num_classes=3, num_images=12, accuracy=accuracy,
        macro_f1=accuracy - 1, error_rate=100 - accuracy, train_time_s=10.0, eval_time_s=1.0, eval_only=False,
        model_dir="", output_dir=str(root / folder), created="2026-01-01T00:00:00", config_sha256="0" * 64,
        versions={"torch": "2.14.1"},
    )
    record.update(extra)
    os.makedirs(root / folder, exist_ok=True)
    write_record(str(root / folder), record)


# Base and new accuracies per trainer, dataset and seed; CoOp's DTD new-class run of seed 3 is missing.
BASE2NEW = {
    ("CoOp", "OxfordPets"): {"base": {1: 90.0, 2: 92.0, 3: 94.0}, "new": {1: 60.0, 2: 63.0, 3: 66.0}},
    ("CoOp", "DescribableTextures"): {"base": {1: 80.0, 2: 81.0, 3: 85.0}, "new": {1: 50.0, 2: 55.0}},
    ("ZeroshotCLIP", "OxfordPets"): {"base": {1: 88.0, 2: 88.0, 3: 88.0}, "new": {1: 96.0, 2: 96.0, 3: 96.0}},
    ("ZeroshotCLIP", "DescribableTextures"): {"base": {1: 52.0, 2: 53.0, 3: 54.0}, "new": {1: 58.0, 2: 59.0, 3: 61.0}},
}
KEY = {"OxfordPets": "oxford_pets", "DescribableTextures": "dtd"}


@pytest.fixture
def base2new_root(tmp_path):
    for (trainer, dataset), parts in BASE2NEW.items():
        for subsample, by_seed in parts.items():
            for seed, accuracy in by_seed.items():
                step = "train_base" if subsample == "base" else "test_new"
                folder = f"base2new/{step}/{KEY[dataset]}/shots_16/{trainer}/vit_b16_ctxv1/seed{seed}"
                write(tmp_path, folder, dataset, trainer, seed, accuracy, subsample, config="vit_b16_ctxv1")
    return tmp_path


def build(root, protocol, **options):
    records, problems = reading.find_records([str(root)])
    assert problems == []
    built, errors = builders.build_tables(records, [protocol], builders.Options(**options))
    assert errors == []
    assert len(built) == 1
    return built[0]


def cells(table, first, method):
    """The cells of the row of ``method`` in block ``first`` (a dataset label, or "Average")."""
    for row in table.rows:
        if (row[0] == first or (first == "Average" and row[0].startswith("Average"))) and row[1] == method:
            return row[2:]
    raise AssertionError(f"no row {first} / {method}")


def blocks(table):
    return list(dict.fromkeys(row[0] for row in table.rows))


def test_base2new_cells_equal_hand_computation(base2new_root):
    table = build(base2new_root, "base2new", published=False)
    assert table.header == ["Dataset", "Method", "Base", "New", "HM"]
    for (trainer, dataset), parts in BASE2NEW.items():
        base, new, harmonic = cells(table, reading.label_of(dataset), trainer)
        b, n = parts["base"], parts["new"]
        assert base.mean == pytest.approx(mean(list(b.values())))
        assert base.std == pytest.approx(pstd(list(b.values())))
        assert new.mean == pytest.approx(mean(list(n.values())))
        assert new.std == pytest.approx(pstd(list(n.values())))
        assert harmonic.mean == pytest.approx(hm(mean(list(b.values())), mean(list(n.values()))))
        both = [s for s in b if s in n]
        assert harmonic.std == pytest.approx(pstd([hm(b[s], n[s]) for s in both]))
        assert harmonic.seeds == tuple(both)
    # CoOp on DTD: 92/63 etc. by hand, once, so the loop above is not its own reference.
    base, new, harmonic = cells(table, "OxfordPets", "CoOp")
    assert (base.mean, new.mean) == (pytest.approx(92.0), pytest.approx(63.0))
    assert base.std == pytest.approx(math.sqrt(8 / 3))
    assert harmonic.mean == pytest.approx(2 * 92 * 63 / 155)
    # Completeness: only CoOp / DTD / new (and what depends on it) lacks a seed.
    base, new, harmonic = cells(table, "DTD", "CoOp")
    assert base.complete and not new.complete and not harmonic.complete
    assert all(c.complete for c in cells(table, "DTD", "ZeroshotCLIP"))


def test_base2new_average_is_hm_of_averages_and_marks_incomplete_data(base2new_root):
    table = build(base2new_root, "base2new", published=False)
    base, new, harmonic = cells(table, "Average", "CoOp")
    assert base.mean == pytest.approx((92.0 + 82.0) / 2)
    assert new.mean == pytest.approx((63.0 + 52.5) / 2)
    assert harmonic.mean == pytest.approx(hm(87.0, 57.75))
    # Spread over seeds of the per-seed averages; seed 3 lacks a DTD new run, so New and HM use seeds 1 and 2.
    assert base.std == pytest.approx(pstd([(90 + 80) / 2, (92 + 81) / 2, (94 + 85) / 2]))
    assert new.std == pytest.approx(pstd([(60 + 50) / 2, (63 + 55) / 2]))
    assert harmonic.std == pytest.approx(pstd([hm(85, 55), hm(86.5, 59)]))
    assert base.complete and not new.complete and not harmonic.complete
    zs = cells(table, "Average", "ZeroshotCLIP")
    assert zs[2].mean == pytest.approx(hm((88 + 53) / 2, (96 + 59.333333333333336) / 2))
    assert all(c.complete for c in zs)
    # Marked in the text, and the missing run is listed with the command that makes it.
    text = render.to_text(table)
    assert [str(m).splitlines()[0] for m in table.missing] == ["CoOp, DTD: no new classes (test_new), seed 3"]
    assert table.missing[0].command == "SEEDS=3 DATASETS=dtd bash scripts/base2new.sh CoOp vit_b16_ctxv1"
    assert "Missing runs (1):" in text
    assert f"{57.75:.2f} ± {pstd([55, 59]):.2f}*" in text
    assert f"{87:.2f} ± {pstd([85, 86.5, 89.5]):.2f} " in text + " "


def test_expected_seeds_and_datasets_report_what_was_never_run(base2new_root):
    table = build(base2new_root, "base2new", published=False, seeds=(1, 2, 3, 4), datasets=("OxfordPets",))
    assert blocks(table) == ["OxfordPets", "Average (1 dataset)"]
    missing = {(m.method, m.what, m.seeds) for m in table.missing}
    assert missing == {(t, f"no {p}", (4,)) for t in ("CoOp", "ZeroshotCLIP")
                       for p in ("base classes (train_base)", "new classes (test_new)")}
    table = build(base2new_root, "base2new", published=False, datasets=("OxfordPets", "EuroSAT"))
    eurosat = cells(table, "EuroSAT", "CoOp")
    assert all(c.mean is None and not c.complete for c in eurosat)
    assert render.format_cell(eurosat[0], 2) == "-"
    average = cells(table, "Average", "CoOp")
    assert average[0].mean == pytest.approx(92.0) and not average[0].complete
    assert average[2].mean == pytest.approx(hm(92.0, 63.0))


def test_eleven_dataset_average_and_published_rows(tmp_path):
    for d, name in enumerate(reading.BENCHMARK):
        for seed in (1, 2):
            write(tmp_path, f"b/{name}/{seed}", name, "CoOp", seed, 60.0 + d + seed, "base")
            write(tmp_path, f"n/{name}/{seed}", name, "CoOp", seed, 50.0 + 2 * d - seed, "new")
    table = build(tmp_path, "base2new")
    base_avg = mean([mean([60.0 + d + s for s in (1, 2)]) for d in range(11)])
    new_avg = mean([mean([50.0 + 2 * d - s for s in (1, 2)]) for d in range(11)])
    base, new, harmonic = cells(table, "Average", "CoOp")
    assert (base.mean, new.mean) == (pytest.approx(base_avg), pytest.approx(new_avg))
    assert harmonic.mean == pytest.approx(hm(base_avg, new_avg))
    per_seed = {s: hm(mean([60.0 + d + s for d in range(11)]), mean([50.0 + 2 * d - s for d in range(11)]))
                for s in (1, 2)}
    assert harmonic.std == pytest.approx(pstd(list(per_seed.values())))
    assert blocks(table)[-1] == "Average (11 datasets)"
    # Published rows: per dataset from MaPLe's Table 1, and the papers' own 11-dataset averages.
    assert [c.mean for c in cells(table, "DTD", "CoOp (published)")] == [79.44, 41.18, 54.24]
    assert [c.mean for c in cells(table, "Average", "MaPLe (published)")] == [82.28, 75.14, 78.55]
    labels = [row[1] for row in table.rows if row[0] == "ImageNet"]
    assert labels == ["CoOp", "CoOp (published)", "CLIP (published)", "CoCoOp (published)", "MaPLe (published)"]
    assert any("Khattak et al., MaPLe" in note for note in table.notes)


def test_published_average_over_a_subset_is_computed_and_labelled(base2new_root):
    table = build(base2new_root, "base2new")
    base, new, harmonic = cells(table, "Average", "CoCoOp (published) [averaged here]")
    assert base.mean == pytest.approx((95.20 + 77.01) / 2)
    assert new.mean == pytest.approx((97.69 + 56.00) / 2)
    assert harmonic.mean == pytest.approx(hm((95.20 + 77.01) / 2, (97.69 + 56.00) / 2))
    # Measured and published side by side: each published row right after the trainer it corresponds to.
    pets = [row[1] for row in table.rows[:6]]
    assert pets == ["ZeroshotCLIP", "CLIP (published)", "CoOp", "CoOp (published)", "CoCoOp (published)",
                    "MaPLe (published)"]


def test_output_formats_parse(base2new_root, tmp_path):
    table = build(base2new_root, "base2new")
    out = tmp_path / "tables"
    written = render.write_outputs([table], str(out))
    assert sorted(os.path.basename(p) for p in written) == [
        "base2new.csv", "base2new.md", "base2new.png", "base2new.tex"]
    # CSV: the same numbers, at full precision.
    with open(out / "base2new.csv") as handle:
        rows = list(csv.DictReader(handle))
    by_key = {(r["dataset"], r["method"], r["metric"]): r for r in rows}
    for (trainer, dataset), parts in BASE2NEW.items():
        row = by_key[(reading.label_of(dataset), trainer, "base")]
        assert float(row["mean"]) == mean(list(parts["base"].values()))
        assert float(row["std"]) == pytest.approx(pstd(list(parts["base"].values())), abs=1e-12)
        assert row["seeds"] == "1 2 3" and row["kind"] == "measured" and row["shots"] == "16"
    hm_row = by_key[("Average", "CoOp", "hm")]
    assert float(hm_row["mean"]) == pytest.approx(hm(87.0, 57.75), abs=1e-12)
    assert hm_row["complete"] == "False"
    published_row = by_key[("OxfordPets", "MaPLe (published)", "new")]
    assert float(published_row["mean"]) == 97.76 and "Khattak" in published_row["source"]
    # Markdown: the header, one line per row, and the missing run.
    markdown = (out / "base2new.md").read_text().splitlines()
    header = next(line for line in markdown if line.startswith("|"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["Dataset", "Method", "Base", "New", "HM"]
    assert sum(1 for line in markdown if line.startswith("|")) == 2 + len(table.rows)
    assert any("seeds 3" in line and "base2new.sh" in line for line in markdown)
    # LaTeX: a complete tabular whose rows all have the header's number of columns.
    latex = (out / "base2new.tex").read_text()
    assert "\\begin{tabular}{llccc}" in latex and "\\end{tabular}" in latex
    body = [line for line in latex.splitlines() if line.endswith("\\\\")]
    assert len(body) == 1 + len(table.rows)
    assert all(line.count(" & ") == 4 for line in body)
    assert "$\\pm$" in latex and "$^*$" in latex
    # PNG: the signature, and an image matplotlib reads back.
    png = (out / "base2new.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(str(out / "base2new.png"))
    assert image.shape[0] > 100 and image.shape[1] > 100


def test_cross_dataset_and_domain_generalisation(tmp_path):
    accuracy = {
        ("CoOp", "ImageNet"): {1: 70.0, 2: 72.0}, ("CoOp", "Caltech101"): {1: 90.0, 2: 91.0},
        ("CoOp", "OxfordPets"): {1: 85.0, 2: 87.0}, ("CoOp", "ImageNetV2"): {1: 63.0, 2: 64.0},
        ("CoOp", "ImageNetR"): {1: 74.0},
        ("ZeroshotCLIP", "ImageNet"): {1: 66.0, 2: 66.0}, ("ZeroshotCLIP", "Caltech101"): {1: 93.0, 2: 93.0},
        ("ZeroshotCLIP", "OxfordPets"): {1: 89.0, 2: 89.0}, ("ZeroshotCLIP", "ImageNetV2"): {1: 60.0, 2: 60.0},
        ("ZeroshotCLIP", "ImageNetR"): {1: 73.0, 2: 73.0},
    }
    for (trainer, dataset), by_seed in accuracy.items():
        for seed, value in by_seed.items():
            write(tmp_path, f"xd/{trainer}/{dataset}/{seed}", dataset, trainer, seed, value, protocol="xd")
    xd = build(tmp_path, "xd")
    assert xd.header == ["Method", "ImageNet (source)", "Caltech101", "OxfordPets", "Average"]
    row = next(r for r in xd.rows if r[0] == "CoOp")
    assert [c.mean for c in row[1:4]] == [71.0, 90.5, 86.0]
    assert row[4].mean == pytest.approx((90.5 + 86.0) / 2)
    assert row[4].std == pytest.approx(pstd([(90 + 85) / 2, (91 + 87) / 2]))
    published_row = next(r for r in xd.rows if r[0] == "MaPLe (published) [averaged here]")
    assert [c.mean for c in published_row[1:4]] == [70.72, 93.53, 90.49]
    assert published_row[4].mean == pytest.approx((93.53 + 90.49) / 2)
    assert xd.missing == []

    dg = build(tmp_path, "dg")
    assert dg.header == ["Method", "ImageNet (source)", "ImageNetV2", "ImageNet-R", "Average"]
    row = next(r for r in dg.rows if r[0] == "CoOp")
    assert row[3].mean == 74.0 and not row[3].complete
    assert row[4].mean == pytest.approx((63.5 + 74.0) / 2) and not row[4].complete
    assert row[4].std == pytest.approx(0.0)  # seed 1 is the only seed with every target: one value
    assert [(m.method, m.dataset, m.seeds) for m in dg.missing] == [("CoOp", "ImageNetR", (2,))]
    assert dg.missing[0].command == 'SEEDS=2 DATASETS=imagenet_r bash scripts/dg.sh CoOp cfg'
    clip = next(r for r in dg.rows if r[0].startswith("CLIP (published)"))
    assert [c.mean for c in clip[1:4]] == [66.73, 60.83, 73.96]


def test_published_transfer_averages_when_all_targets_are_present(tmp_path):
    for dataset in (reading.XD_SOURCE, *reading.XD_TARGETS, *reading.DG_TARGETS):
        write(tmp_path, f"xd/{dataset}", dataset, "CoOp", 1, 50.0, protocol="xd")
    xd = build(tmp_path, "xd")
    row = next(r for r in xd.rows if r[0] == "CoCoOp (published)")
    assert row[-1].mean == 65.74
    assert len(xd.header) == 1 + 1 + 10 + 1
    dg = build(tmp_path, "dg")
    assert next(r for r in dg.rows if r[0] == "MaPLe (published)")[-1].mean == 60.27


def test_transfer_tables_with_the_world_as_source(tmp_path):
    """Records of the world's cross-dataset runs make World-sourced tables with no published rows; a missing run's
    command names XD_SOURCE=world; ImageNet and World records in one folder are refused."""
    xd_targets, dg_targets, _ = reading.TRANSFER_SOURCES["World"]
    for seed in (1, 2):
        for dataset in ("World", *xd_targets, *dg_targets):
            if (dataset, seed) != ("WorldSigns", 2):
                write(tmp_path, f"xd/{dataset}/{seed}", dataset, "CoOp", seed, 40.0 + seed, protocol="xd", config="world")
    xd = build(tmp_path, "xd")
    assert xd.header == ["Method", "World (source)", *xd_targets, "Average"]
    assert "trained on World" in xd.title and [r[0] for r in xd.rows] == ["CoOp"]
    assert [(m.dataset, m.seeds) for m in xd.missing] == [("WorldSigns", (2,))]
    assert xd.missing[0].command == "XD_SOURCE=world SEEDS=2 DATASETS=world_signs bash scripts/xd.sh CoOp world"
    dg = build(tmp_path, "dg")
    assert dg.header == ["Method", "World (source)", *dg_targets, "Average"]
    write(tmp_path, "xd/imagenet", "ImageNet", "CoOp", 1, 70.0, protocol="xd", config="world")
    records, _ = reading.find_records([str(tmp_path)])
    _, errors = builders.build_tables(records, ["xd"], builders.Options())
    assert len(errors) == 1 and "several cross-dataset sources (ImageNet, World)" in errors[0]


def test_fewshot_table(tmp_path):
    values = {("CoOp", 1): {1: 70.0, 2: 72.0}, ("CoOp", 2): {1: 75.0}, ("ZeroshotCLIP", 0): {1: 65.0, 2: 65.0}}
    for dataset, offset in (("DescribableTextures", 0.0), ("Caltech101", 20.0)):
        for (trainer, shots), by_seed in values.items():
            for seed, value in by_seed.items():
                write(tmp_path, f"fs/{dataset}/{trainer}/{shots}/{seed}", dataset, trainer, seed, value + offset,
                      shots=shots, protocol="fewshot")
    table = build(tmp_path, "fewshot")
    assert table.header == ["Dataset", "Method", "zero-shot", "1 shot", "2 shots"]
    assert blocks(table) == ["Caltech101", "DTD", "Average (2 datasets)"]
    zero, one, two = cells(table, "DTD", "CoOp")
    assert zero == "" and one.mean == 71.0 and one.std == 1.0 and two.mean == 75.0 and not two.complete
    zs = cells(table, "DTD", "ZeroshotCLIP")
    assert zs[0].mean == 65.0 and zs[1:] == ["", ""]
    average = cells(table, "Average", "CoOp")
    assert average[1].mean == pytest.approx((71.0 + 91.0) / 2)
    assert average[1].std == pytest.approx(pstd([(70 + 90) / 2, (72 + 92) / 2]))
    assert {(m.dataset, m.what, m.seeds) for m in table.missing} == {
        ("DescribableTextures", "no 2-shot run", (2,)), ("Caltech101", "no 2-shot run", (2,))}
    assert 'SHOTS_LIST=2 SEEDS=2 DATASETS=dtd bash scripts/fewshot.sh CoOp cfg' in [m.command for m in table.missing]


def test_ambiguous_records_get_a_clear_error_and_methods_tell_them_apart(tmp_path):
    for config, value in (("vit_b16_ctxv1", 80.0), ("vit_b16_ep50_ctxv1", 70.0)):
        for subsample in ("base", "new"):
            write(tmp_path, f"{config}/{subsample}", "OxfordPets", "CoOp", 1, value, subsample, config=config)
    records, _ = reading.find_records([str(tmp_path)])
    built, errors = builders.build_tables(records, ["base2new"], builders.Options())
    assert built == [] and len(errors) == 1
    assert "2 records for CoOp on OxfordPets" in errors[0] and "--method" in errors[0]
    specs = tuple(reading.MethodSpec.parse(text) for text in ("CoOp-200=CoOp:vit_b16_ctxv1",
                                                             "CoOp-50=CoOp:vit_b16_ep50_ctxv1"))
    table = build(tmp_path, "base2new", methods=specs, published=False)
    assert cells(table, "OxfordPets", "CoOp-200")[0].mean == 80.0
    assert cells(table, "OxfordPets", "CoOp-50")[0].mean == 70.0
    # One label for several specs merges them into one method (here: still one record per cell).
    specs = tuple(reading.MethodSpec.parse(text) for text in ("Only=CoOp:vit_b16_ctxv1", "Only=ZeroshotCLIP"))
    table = build(tmp_path, "base2new", methods=specs, published=False)
    assert [row[1] for row in table.rows] == ["Only", "Only"]


def test_several_shot_counts_need_a_choice(tmp_path):
    for shots, value in ((4, 60.0), (16, 80.0)):
        for subsample in ("base", "new"):
            write(tmp_path, f"{shots}/{subsample}", "OxfordPets", "CoOp", 1, value, subsample, shots=shots)
    records, _ = reading.find_records([str(tmp_path)])
    _, errors = builders.build_tables(records, ["base2new"], builders.Options())
    assert "several shot counts (4, 16)" in errors[0] and "--shots" in errors[0]
    table = build(tmp_path, "base2new", shots=4)
    assert cells(table, "OxfordPets", "CoOp")[0].mean == 60.0
    assert table.title.startswith("Base-to-new generalisation (4 shots)")


def test_records_are_found_by_name_and_checked(tmp_path):
    write(tmp_path, "a", "OxfordPets", "CoOp", 1, 80.0, "base", protocol="")  # made by hand: counted by its classes
    write(tmp_path, "a", "OxfordPets", "CoOp", 1, 81.0, "base", protocol="")  # re-evaluated: the first is kept aside
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / RECORD_NAME).write_text("{not json")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / RECORD_NAME).write_text('{"dataset": "OxfordPets"}')
    records, problems = reading.find_records([str(tmp_path)])
    assert [r["accuracy"] for r in records] == [81.0]
    assert reading.protocol_of(records[0]) == "base2new"
    assert len(problems) == 2 and "unreadable" in problems[0] and "lacks trainer" in problems[1]
    assert len(list((tmp_path / "a").glob("results-*.json"))) == 1
    assert reading.RECORD_NAME == RECORD_NAME


def test_summary_beside_each_record(tmp_path):
    write(tmp_path, "run", "OxfordPets", "CoOp", 3, 83.3333, "new", shots=4, config="vit_b16_ctxv1",
          eval_only=True, model_dir="/somewhere/train_base", train_time_s=None, eval_time_s=2.25, epoch=10)
    lines = dict(line.split(None, 1) for line in (tmp_path / "run" / SUMMARY_NAME).read_text().splitlines()[1:])
    assert lines["dataset"] == "OxfordPets, test split"
    assert lines["classes"] == "3 (the new half of the classes)"
    assert lines["trainer"] == "CoOp" and lines["seed"] == "3" and lines["shots"] == "4 per class"
    assert lines["config"] == "vit_b16_ctxv1 (backbone ViT-B/16)"
    assert lines["model"] == "loaded from /somewhere/train_base (epoch 10)"
    assert lines["accuracy"].startswith("83.33%")
    assert lines["time"] == "training -, evaluation 2.2 s"


def test_command_line(base2new_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert tables.main([str(base2new_root), "--out", str(out), "--no-figures"]) == 0
    printed = capsys.readouterr().out
    assert "Base-to-new generalisation (16 shots)" in printed and "Missing runs (1):" in printed
    assert sorted(os.listdir(out)) == ["base2new.csv", "base2new.md", "base2new.tex"]
    assert tables.main([str(base2new_root), "--out", str(out), "--no-figures", "--strict"]) == 1
    assert tables.main([str(base2new_root), "--datasets", "nope"]) == 2
    assert "Unknown dataset 'nope'" in capsys.readouterr().err
    assert tables.main([str(tmp_path / "empty")]) == 2
    assert tables.main([str(base2new_root), "--protocol", "xd"]) == 2
    assert "no records of protocol xd" in capsys.readouterr().err


def test_published_numbers_are_consistent():
    """Each published HM is the HM of its Base and New, and each average the mean of its datasets (to rounding),
    which guards the table against a mistyped number."""
    for paper, rows in published.BASE2NEW.items():
        assert set(rows) == set(reading.BENCHMARK)
        for dataset, (base, new, harmonic) in rows.items():
            assert harmonic == pytest.approx(hm(base, new), abs=0.011), (paper, dataset)
        average = published.BASE2NEW_AVERAGE[paper]
        assert average[0] == pytest.approx(mean([v[0] for v in rows.values()]), abs=0.011)
        assert average[1] == pytest.approx(mean([v[1] for v in rows.values()]), abs=0.011)
        assert average[2] == pytest.approx(hm(average[0], average[1]), abs=0.011)
    # The published averages (MaPLe README, CoCoOp paper; KgCoOp README; PromptSRC README for IVLP and PromptSRC).
    assert published.BASE2NEW_AVERAGE == {"CLIP": (69.34, 74.22, 71.70), "CoOp": (82.69, 63.22, 71.66),
                                          "CoCoOp": (80.47, 71.69, 75.83), "MaPLe": (82.28, 75.14, 78.55),
                                          "KgCoOp": (80.73, 73.6, 77.0), "IVLP": (84.21, 71.79, 77.51),
                                          "PromptSRC": (84.26, 76.10, 79.97)}
    for rows, averages, targets in ((published.CROSS_DATASET, published.CROSS_DATASET_AVERAGE, reading.XD_TARGETS),
                                    (published.DOMAIN_GENERALIZATION, published.DOMAIN_GENERALIZATION_AVERAGE,
                                     reading.DG_TARGETS)):
        for paper, row in rows.items():
            assert set(row) == {reading.XD_SOURCE, *targets}
            assert averages[paper] == pytest.approx(mean([row[d] for d in targets]), abs=0.011), paper
    assert set(published.TRAINER_OF) >= set(published.BASE2NEW) | set(published.CROSS_DATASET)


# ----------------------------------------------------------------------------------------------- paired statistics
def test_paired_difference_against_a_hand_computation():
    a = [70.0, 72.0, 75.0, 71.0]
    b = [68.0, 70.5, 72.5, 69.2]
    diffs = [2.0, 1.5, 2.5, 1.8]
    m = mean(diffs)
    sd = math.sqrt(sum((d - m) ** 2 for d in diffs) / 3)
    t_975_3 = 3.182446305284263  # Student t, 3 degrees of freedom, 97.5% quantile (statistical tables)
    result = statistics.paired_difference(a, b)
    assert result["n"] == 4 and result["mean"] == pytest.approx(1.95)
    assert result["low"] == pytest.approx(m - t_975_3 * sd / 2)
    assert result["high"] == pytest.approx(m + t_975_3 * sd / 2)
    assert result["low"] > 0  # every cell favours a, tightly enough


def test_paired_difference_interval_includes_zero_when_the_cells_disagree():
    result = statistics.paired_difference([70.0, 60.0, 81.0], [69.0, 62.0, 80.0])
    assert result["mean"] == pytest.approx(0.0)
    assert result["low"] < 0 < result["high"]
    assert statistics.paired_difference([70.0, 60.0, 81.0], [69.0, 62.0, 80.0], confidence=0.5)["high"] < result["high"]


def test_paired_difference_needs_pairs():
    assert statistics.paired_difference([3.0], [1.0]) == {"mean": 2.0, "low": None, "high": None, "n": 1}
    with pytest.raises(ValueError, match="same cells"):
        statistics.paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="no paired cells"):
        statistics.paired_difference([], [])


def test_a_paper_with_only_an_average_shows_it_on_the_average_row_alone(tmp_path):
    for dataset in reading.BENCHMARK:
        for subsample in ("base", "new"):
            write(tmp_path, f"{dataset}/{subsample}", dataset, "KgCoOp", 1, 70.0, subsample=subsample)
    table = build(tmp_path, "base2new")
    rows = [row for row in table.rows if row[1].startswith("KgCoOp (published)")]
    assert [(row[0], [cell.mean for cell in row[2:]]) for row in rows] == [
        ("Average (11 datasets)", [80.73, 73.6, 77.0])]  # its README's average; no per-dataset cell is made up
    assert any(note.startswith("KgCoOp (published): Yao et al., KgCoOp, CVPR 2023") for note in table.notes)
    # Over fewer datasets its average cannot be recomputed: no row at all.
    partial = tmp_path / "partial"
    for subsample in ("base", "new"):
        write(partial, f"dtd/{subsample}", "DescribableTextures", "KgCoOp", 1, 70.0, subsample=subsample)
    assert not any(row[1].startswith("KgCoOp (published)") for row in build(partial, "base2new").rows)
