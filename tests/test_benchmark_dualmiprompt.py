"""The benchmark's smoke mode with CoOp and DualMIPrompt in one run (in-process): every field, and the ratio."""
import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ROW_FIELDS = {"trainer", "mode", "backbone", "device", "classes", "batch", "step_s", "eval_classes", "eval_images",
              "eval_images_per_s", "checkpoint_bytes"}


def load_benchmark():
    spec = importlib.util.spec_from_file_location("benchmark", os.path.join(ROOT, "scripts/benchmark.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_benchmark_of_coop_and_dualmiprompt(tmp_path, capsys):
    benchmark = load_benchmark()
    path = tmp_path / "bench.json"
    result = benchmark.main(["--quick", "--trainers", "CoOp", "DualMIPrompt", "--json", str(path), "--device", "cpu"])
    with open(path) as handle:
        assert json.load(handle) == json.loads(json.dumps(result))

    rows = result["rows"]
    assert sorted((r["trainer"], r["mode"]) for r in rows) == [
        ("CoOp", "ours"), ("CoOp", "reference"), ("DualMIPrompt", "ours"), ("DualMIPrompt", "reference")]
    for row in rows:
        assert set(row) == ROW_FIELDS
        assert row["step_s"] > 0 and row["eval_images_per_s"] > 0 and row["checkpoint_bytes"] > 0
        assert (row["backbone"], row["classes"], row["batch"]) == ("tiny", 10, 4)
    by_key = {(r["trainer"], r["mode"]): r for r in rows}
    # DualMIPrompt saves the context plus its critics' temperatures: a little more than CoOp, never CLIP.
    assert by_key["CoOp", "ours"]["checkpoint_bytes"] < by_key["DualMIPrompt", "ours"]["checkpoint_bytes"] < 64 * 1024

    assert [r["trainer"] for r in result["ratios"]] == ["CoOp", "DualMIPrompt"]
    for ratio in result["ratios"]:
        ours, reference = by_key[ratio["trainer"], "ours"], by_key[ratio["trainer"], "reference"]
        assert ratio["step_time_ratio"] == pytest.approx(ours["step_s"] / reference["step_s"])
        assert ratio["eval_speedup"] == pytest.approx(ours["eval_images_per_s"] / reference["eval_images_per_s"])

    (relative,) = result["relative"]
    assert (relative["trainer"], relative["baseline"]) == ("DualMIPrompt", "CoOp")
    assert relative["step_s"] == by_key["DualMIPrompt", "ours"]["step_s"]
    assert relative["baseline_step_s"] == by_key["CoOp", "ours"]["step_s"]
    assert relative["step_ratio"] == pytest.approx(relative["step_s"] / relative["baseline_step_s"])
    assert f"DualMIPrompt/CoOp step = {relative['step_ratio']:.3f}x" in capsys.readouterr().out
