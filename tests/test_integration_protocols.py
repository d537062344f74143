"""The whole-protocol scripts (base-to-new, cross-dataset, few-shot) end to end for ZeroshotCLIP and CoOp with real
Dassl, the tiny CLIP and generated OxfordPets, DTD and ImageNet layouts; then the tables tool on their outputs."""
import csv
import json
import os

import pytest
import tables
from fixtures import imagenet_setup, make_split_dataset, run_script, save_tiny_clip, tiny_overrides

pytestmark = pytest.mark.integration

TRAINERS = ("ZeroshotCLIP", "CoOp")
TEXTURES = ["banded", "blotchy", "braided", "bubbly"]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("protocols")
    root = tmp / "data"
    make_split_dataset(str(root))
    make_split_dataset(str(root), dataset_dir="dtd", split_name="split_zhou_DescribableTextures.json",
                       classes=TEXTURES, per_split=(4, 2, 3), seed=1)
    imagenet_setup(str(root))
    clip_file = save_tiny_clip(str(tmp / "tiny_clip.pt"))
    output = tmp / "output"
    env = {"DATA": str(root), "OUTPUT": str(output), "SEEDS": "1"}
    overrides = tiny_overrides(clip_file, epochs=1)
    for trainer in TRAINERS:
        run_script("base2new.sh", [trainer], overrides, env={**env, "DATASETS": "oxford_pets dtd", "SHOTS": "2"})
        run_script("xd.sh", [trainer], overrides, env={**env, "DATASETS": "oxford_pets", "SHOTS": "2"})
        run_script("fewshot.sh", [trainer], overrides, env={**env, "DATASETS": "dtd", "SHOTS_LIST": "1 2"})
    return output


def record(folder):
    with open(folder / "results.json") as handle:
        return json.load(handle)


def runs(output):
    """Every finished run: its folder relative to the output, and its record."""
    return {str(path.parent.relative_to(output)): record(path.parent) for path in output.rglob("results.json")}


def test_every_run_is_where_the_layout_says_with_its_record_and_summary(outputs):
    found = runs(outputs)
    expected = set()
    for trainer, b2n_cfg, xd_cfg in (("CoOp", "vit_b16_ctxv1", "vit_b16_ep50_ctxv1"),
                                     ("ZeroshotCLIP", "vit_b16", "vit_b16")):
        for dataset in ("oxford_pets", "dtd"):
            for step in ("train_base", "test_new"):
                expected.add(f"base2new/{step}/{dataset}/shots_2/{trainer}/{b2n_cfg}/seed1")
        expected.add(f"xd/imagenet/{trainer}/{xd_cfg}_2shots/seed1")
        expected.add(f"xd/evaluation/{trainer}/{xd_cfg}_2shots/oxford_pets/seed1")
    expected |= {"fewshot/dtd/CoOp/vit_b16_ep50_1shots/seed1", "fewshot/dtd/CoOp/vit_b16_ep100_2shots/seed1",
                 "fewshot/dtd/ZeroshotCLIP/vit_b16_0shots/seed1"}
    assert set(found) == expected
    for folder, rec in found.items():
        assert rec["protocol"] == folder.split("/")[0]
        summary = (outputs / folder / "summary.txt").read_text()
        assert f"accuracy  {rec['accuracy']:.2f}%" in summary
        assert f"seed      {rec['seed']}" in summary
    xd_test = found["xd/evaluation/CoOp/vit_b16_ep50_ctxv1_2shots/oxford_pets/seed1"]
    assert xd_test["model_dir"] == str(outputs / "xd/imagenet/CoOp/vit_b16_ep50_ctxv1_2shots/seed1")
    assert (xd_test["dataset"], xd_test["subsample"], xd_test["num_classes"]) == ("OxfordPets", "all", 6)
    source = found["xd/imagenet/CoOp/vit_b16_ep50_ctxv1_2shots/seed1"]
    assert (source["dataset"], source["num_classes"], source["num_images"]) == ("ImageNet", 4, 8)
    assert found["fewshot/dtd/CoOp/vit_b16_ep100_2shots/seed1"]["shots"] == 2
    assert found["fewshot/dtd/ZeroshotCLIP/vit_b16_0shots/seed1"]["eval_only"] is True


def test_tables_from_the_runs(outputs, tmp_path):
    found = runs(outputs)
    out = tmp_path / "tables"
    assert tables.main([str(outputs), "--out", str(out), "--strict"]) == 0  # --strict: nothing missing
    assert sorted(os.listdir(out)) == sorted([f"{name}.{ext}" for name in ("base2new", "xd", "fewshot")
                                              for ext in ("md", "tex", "csv")] + ["base2new.png", "fewshot.png"])

    def rows(name):
        with open(out / f"{name}.csv") as handle:
            return {(r["dataset"], r["method"], r["metric"], r["shots"]): float(r["mean"])
                    for r in csv.DictReader(handle) if r["kind"] == "measured"}

    base2new = rows("base2new")
    bases, news = {t: [] for t in TRAINERS}, {t: [] for t in TRAINERS}
    for trainer, cfg in (("CoOp", "vit_b16_ctxv1"), ("ZeroshotCLIP", "vit_b16")):
        for key, label in (("oxford_pets", "OxfordPets"), ("dtd", "DTD")):
            base = found[f"base2new/train_base/{key}/shots_2/{trainer}/{cfg}/seed1"]["accuracy"]
            new = found[f"base2new/test_new/{key}/shots_2/{trainer}/{cfg}/seed1"]["accuracy"]
            assert base2new[(label, trainer, "base", "2")] == base
            assert base2new[(label, trainer, "new", "2")] == new
            assert base2new[(label, trainer, "hm", "2")] == pytest.approx(2 * base * new / (base + new))
            bases[trainer].append(base)
            news[trainer].append(new)
        b, n = sum(bases[trainer]) / 2, sum(news[trainer]) / 2
        assert base2new[("Average", trainer, "hm", "2")] == pytest.approx(2 * b * n / (b + n))

    xd = rows("xd")
    for trainer, cfg in (("CoOp", "vit_b16_ep50_ctxv1"), ("ZeroshotCLIP", "vit_b16")):
        source = found[f"xd/imagenet/{trainer}/{cfg}_2shots/seed1"]["accuracy"]
        target = found[f"xd/evaluation/{trainer}/{cfg}_2shots/oxford_pets/seed1"]["accuracy"]
        assert xd[("ImageNet", trainer, "accuracy", "2")] == source
        assert xd[("OxfordPets", trainer, "accuracy", "2")] == target
        assert xd[("Average", trainer, "accuracy", "2")] == target

    fewshot = rows("fewshot")
    assert fewshot[("DTD", "ZeroshotCLIP", "accuracy", "0")] == \
        found["fewshot/dtd/ZeroshotCLIP/vit_b16_0shots/seed1"]["accuracy"]
    for shots, cfg in ((1, "vit_b16_ep50"), (2, "vit_b16_ep100")):
        assert fewshot[("DTD", "CoOp", "accuracy", str(shots))] == \
            found[f"fewshot/dtd/CoOp/{cfg}_{shots}shots/seed1"]["accuracy"]
    markdown = (out / "base2new.md").read_text()
    assert "| Dataset" in markdown and "CoOp (published)" in markdown and "Missing runs" not in markdown


def test_rerunning_a_protocol_skips_every_finished_run(outputs):
    before = {folder: (outputs / folder / "results.json").read_bytes() for folder in runs(outputs)}
    result = run_script("base2new.sh", ["CoOp"], env={"DATA": "/nonexistent", "OUTPUT": str(outputs), "SEEDS": "1",
                                                      "DATASETS": "oxford_pets dtd", "SHOTS": "2"})
    assert result.stdout.count("finished run, skipped") == 4
    assert {folder: (outputs / folder / "results.json").read_bytes() for folder in runs(outputs)} == before
