"""The benchmark script's smoke mode for CoCoOp and MaPLe: every field of its result is present and sensible."""
import math
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))

import benchmark  # noqa: E402


def learned_count(trainer):
    from trainers.clip_loader import random_clip

    model = benchmark.CASES[trainer](random_clip("tiny"), benchmark.class_names(10))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_quick_benchmark_reports_every_field(tmp_path):
    out = tmp_path / "bench.json"
    result = benchmark.main(["--quick", "--trainers", "CoCoOp", "MaPLe", "--json", str(out)])
    assert out.is_file()
    settings = result["settings"]
    assert settings["trainers"] == ["CoCoOp", "MaPLe"] and settings["backbone"] == "tiny" and settings["quick"]

    rows = result["rows"]
    assert sorted((r["trainer"], r["mode"]) for r in rows) == [
        ("CoCoOp", "ours"), ("CoCoOp", "reference"), ("MaPLe", "ours"), ("MaPLe", "reference")]
    expected_keys = {"trainer", "mode", "backbone", "device", "classes", "batch", "step_s", "eval_classes",
                     "eval_images", "eval_images_per_s", "checkpoint_bytes"}
    for row in rows:
        assert set(row) == expected_keys
        assert (row["backbone"], row["device"], row["classes"], row["batch"]) == ("tiny", "cpu", 10, 4)
        assert (row["eval_classes"], row["eval_images"]) == (10, 8)
        assert row["step_s"] > 0 and math.isfinite(row["step_s"])
        assert row["eval_images_per_s"] > 0 and math.isfinite(row["eval_images_per_s"])
        # Learned parameters only: at least their fp32 bytes, and far less than the frozen CLIP.
        assert 4 * learned_count(row["trainer"]) <= row["checkpoint_bytes"] < 4 * learned_count(row["trainer"]) + 8192

    ratios = {r["trainer"]: r for r in result["ratios"]}
    assert set(ratios) == {"CoCoOp", "MaPLe"}
    for trainer, ratio in ratios.items():
        ours, reference = sorted((r for r in rows if r["trainer"] == trainer), key=lambda r: r["mode"])
        assert set(ratio) == {"trainer", "step_time_ratio", "eval_speedup"}
        assert math.isclose(ratio["step_time_ratio"], ours["step_s"] / reference["step_s"])
        assert math.isclose(ratio["eval_speedup"], ours["eval_images_per_s"] / reference["eval_images_per_s"])
        assert ours["checkpoint_bytes"] == reference["checkpoint_bytes"]


def test_maple_case_fits_the_depth_to_the_model():
    from trainers.clip_loader import random_clip

    assert benchmark.build_maple(random_clip("tiny"), ["a", "b"]).prompt_depth == 2
    assert torch.is_tensor(benchmark.build_cocoop(random_clip("tiny"), ["a", "b"]).prompt_learner.ctx)
