"""scripts/benchmark.py: its quick mode runs every trainer and reports every field; its FLOP count is the
analytic one; its options refuse what cannot be measured. No timing is asserted."""
import json
import math
import os
import subprocess
import sys

import benchmark
import pytest
import torch

from trainers import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRAINERS = ["CoOp", "KgCoOp", "CoCoOp", "MaPLe", "IVLP", "PromptSRC", "DualMIPrompt"]  # the registry's order
RATIO_FIELDS = {"trainer", "prec", "step_time_ratio", "eval_speedup", "text_time_ratio", "text_flops_ratio",
                "train_peak_ratio", "train_working_memory_ratio", "eval_peak_ratio", "eval_working_memory_ratio"}


def learned_count(trainer):
    from trainers.clip_loader import random_clip

    model = registry.get(trainer).benchmark_model(random_clip("tiny"), benchmark.class_names(10))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """``(result, printed report)`` of ``python3 scripts/benchmark.py --quick`` run as a user runs it (a fresh
    interpreter: what it imports and registers comes from the script, not from conftest); the documents' own
    ``--quick`` command is checked only for starting (tests/test_doc_commands.py), as this run covers it."""
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    done = subprocess.run([sys.executable, "scripts/benchmark.py", "--quick", "--device", "cpu", "--json", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with open(path) as handle:
        return json.load(handle), done.stdout


def positive(value):
    return value is not None and value > 0 and math.isfinite(value)


def test_quick_run_writes_its_result_as_json(quick):
    written, printed = quick
    assert all(trainer in printed for trainer in TRAINERS)  # the report, printed beside the JSON
    assert set(written) == {"settings", "machine", "matmul_flops_per_s", "rows", "ratios", "relative"}
    settings = written["settings"]
    assert settings["trainers"] == TRAINERS and settings["backbone"] == "tiny" and settings["quick"]
    assert settings["prec"] == ["fp32"] and positive(written["matmul_flops_per_s"]["fp32"])
    machine = written["machine"]
    assert machine["cpu"] and machine["cpu_cores"] >= 1 and machine["torch"] == torch.__version__
    assert machine["commit"] and machine["date"]


def test_every_row_has_every_field_measured(quick):
    rows = quick[0]["rows"]
    assert sorted((r["trainer"], r["mode"]) for r in rows) == sorted(
        (trainer, mode) for trainer in TRAINERS for mode in ("ours", "reference"))
    for row in rows:
        assert list(row) == list(benchmark.ROW_FIELDS)
        assert (row["backbone"], row["device"], row["prec"], row["classes"], row["batch"]) == ("tiny", "cpu", "fp32",
                                                                                              10, 4)
        assert (row["eval_classes"], row["eval_images"], row["eval_batch"]) == (10, 8, 4)
        for field in ("step_s", "eval_images_per_s", "text_flops", "text_s", "text_flops_per_s",
                      "text_fraction_of_matmul", "train_peak_bytes", "train_rest_bytes", "eval_peak_bytes",
                      "eval_rest_bytes"):
            assert positive(row[field]), (row["trainer"], row["mode"], field, row[field])
        assert row["train_peak_bytes"] >= row["train_rest_bytes"] and row["eval_peak_bytes"] >= row["eval_rest_bytes"]
        assert row["text_flops_per_s"] == pytest.approx(row["text_flops"] / row["text_s"])
        # Learned parameters only: at least their fp32 bytes, and far less than the frozen CLIP.
        learned = 4 * learned_count(row["trainer"])
        assert learned <= row["checkpoint_bytes"] < learned + 8192


def test_ratios_are_computed_from_the_rows(quick):
    result = quick[0]
    by_key = {(r["trainer"], r["mode"]): r for r in result["rows"]}
    assert [r["trainer"] for r in result["ratios"]] == TRAINERS
    for ratio in result["ratios"]:
        assert set(ratio) == RATIO_FIELDS and ratio["prec"] == "fp32"
        ours, reference = by_key[ratio["trainer"], "ours"], by_key[ratio["trainer"], "reference"]
        assert ratio["step_time_ratio"] == pytest.approx(ours["step_s"] / reference["step_s"])
        assert ratio["eval_speedup"] == pytest.approx(ours["eval_images_per_s"] / reference["eval_images_per_s"])
        assert ratio["text_time_ratio"] == pytest.approx(ours["text_s"] / reference["text_s"])
        assert ratio["train_peak_ratio"] == pytest.approx(ours["train_peak_bytes"] / reference["train_peak_bytes"])
        assert ratio["eval_peak_ratio"] == pytest.approx(ours["eval_peak_bytes"] / reference["eval_peak_bytes"])
        # The same prompts run with fewer positions: a deterministic count, unlike the times.
        assert ratio["text_flops_ratio"] < 0.5
        assert ours["checkpoint_bytes"] == reference["checkpoint_bytes"]
    relative = {r["trainer"]: r for r in result["relative"]}
    assert set(relative) == set(TRAINERS) - {"CoOp"}
    for trainer, entry in relative.items():
        assert entry["baseline"] == "CoOp" and entry["step_s"] == by_key[trainer, "ours"]["step_s"]
        assert entry["step_ratio"] == pytest.approx(entry["step_s"] / by_key["CoOp", "ours"]["step_s"])


def test_a_cached_step_is_timed_for_the_trainers_with_a_frozen_image_encoder_only(quick):
    from trainers.clip_loader import random_clip

    frozen = {t for t in TRAINERS
              if registry.get(t).benchmark_model(random_clip("tiny"), benchmark.class_names(10)).image_encoder_is_frozen}
    assert {"CoOp", "KgCoOp", "DualMIPrompt"} <= frozen and not {"IVLP", "MaPLe", "PromptSRC"} & frozen
    for row in quick[0]["rows"]:
        if row["mode"] == "ours" and row["trainer"] in frozen:
            assert positive(row["cached_step_s"]), row["trainer"]
            assert f"{row['trainer']} fp32 with cached image features: step" in quick[1]
        else:
            assert row["cached_step_s"] is None, (row["trainer"], row["mode"])
        if row["trainer"] not in frozen:
            assert f"{row['trainer']} fp32 with cached image features" not in quick[1]


def test_report_prints_the_table_and_the_ratios(quick):
    out = quick[1]
    assert "train peak MiB" in out and "of matmul" in out and "matmul 256^2 fp32:" in out
    dual = next(r for r in quick[0]["relative"] if r["trainer"] == "DualMIPrompt")
    assert f"DualMIPrompt/CoOp fp32 step = {dual['step_ratio']:.3f}x" in out


def test_text_flops_are_the_analytic_count():
    """Forward of the text encoder: per layer 24 N L w^2 for the projections and MLP, 4 N L^2 w for attention
    (counted on the CPU kernel through our formula), then the final projection 2 N w e."""
    from trainers.clip_loader import random_clip
    from trainers.encoders import TextEncoder

    clip_model = random_clip("tiny")
    encoder = TextEncoder(clip_model)
    n, length, width = 3, 10, clip_model.ln_final.weight.shape[0]
    embed = clip_model.text_projection.shape[1]
    prompts = torch.randn(n, 77, width)
    eot = torch.tensor([length - 1, 4, 6])
    with torch.no_grad():
        counted = benchmark.count_flops(lambda: encoder(prompts, eot))
        full = benchmark.count_flops(lambda: encoder(prompts, eot, reference=True))
    layers = len(encoder.blocks)

    def expected(positions):
        return layers * (24 * n * positions * width ** 2 + 4 * n * positions ** 2 * width) + 2 * n * width * embed

    assert counted == expected(length)
    assert full == expected(77)


def test_evaluation_only_run_leaves_the_step_unmeasured():
    result = benchmark.main(["--quick", "--trainers", "CoOp", "--steps", "0", "--no-memory", "--device", "cpu"])
    ours, reference = result["rows"]
    assert ours["step_s"] is None and ours["train_peak_bytes"] is None and ours["eval_peak_bytes"] is None
    assert positive(ours["eval_images_per_s"]) and positive(reference["eval_images_per_s"])
    (ratio,) = result["ratios"]
    assert ratio["step_time_ratio"] is None and positive(ratio["eval_speedup"])
    assert result["relative"] == []


@pytest.mark.parametrize("prec", ["fp16", "amp"])
def test_gpu_only_precisions_are_refused_on_the_cpu(prec):
    with pytest.raises(SystemExit, match=f"--prec {prec} needs a CUDA device"):
        benchmark.main(["--quick", "--prec", prec, "--device", "cpu"])


def test_bf16_runs_on_the_cpu_in_bf16():
    result = benchmark.main(["--quick", "--trainers", "CoOp", "--prec", "bf16", "--no-memory", "--device", "cpu"])
    assert {r["prec"] for r in result["rows"]} == {"bf16"} and positive(result["matmul_flops_per_s"]["bf16"])
    assert all(positive(r["step_s"]) for r in result["rows"])


def test_maple_case_fits_the_depth_to_the_model():
    from trainers.clip_loader import random_clip

    assert registry.get("MaPLe").benchmark_model(random_clip("tiny"), ["a", "b"]).prompt_depth == 2


def test_a_memory_probe_that_fails_leaves_its_fields_unmeasured_and_says_why(capsys):
    spec = {"trainer": "CoOp", "mode": "ours", "prec": "fp32", "phase": "train", "device": "cpu", "backbone": "no-such",
            "classes": 10, "batch": 4, "eval_classes": 10, "eval_batch": 4}
    assert benchmark.child_memory(spec) == {"rest_bytes": None, "peak_bytes": None}
    said = capsys.readouterr().err
    assert said.startswith("memory probe CoOp ours fp32 train failed: ") and "no-such" in said, said
