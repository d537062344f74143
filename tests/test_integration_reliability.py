"""Reliability: a run killed with SIGKILL resumes to exactly the uninterrupted result; the same command gives the
same record; concurrent runs share the few-shot cache safely; checkpoints cannot run code."""
import json
import multiprocessing
import os
import signal
import subprocess
import sys

import pytest
import torch
from fixtures import REPO, pets_setup, run_train, tiny_overrides

from trainers.records import VOLATILE_FIELDS

pytestmark = pytest.mark.integration

CLASSES = [f"breed_{i}" for i in range(6)]


def args_for(root, out, clip_file):
    return [sys.executable, "train.py", "--root", str(root), "--seed", "3", "--trainer", "CoOp",
            "--dataset-config-file", "configs/datasets/oxford_pets.yaml",
            "--config-file", "configs/trainers/CoOp/vit_b16_ctxv1.yaml", "--output-dir", str(out),
            *tiny_overrides(clip_file, epochs=4, batch=2), "TRAIN.PRINT_FREQ", "1", "DATASET.NUM_SHOTS", "8"]


def env():
    return {**os.environ, "DUALMI_ENV_INFO": "0", "PYTHONUNBUFFERED": "1"}


def final_state(out):
    checkpoint = torch.load(out / "prompt_learner" / "model.pth.tar-4", weights_only=True)
    record = json.loads((out / "results.json").read_text())
    return checkpoint["state_dict"]["prompt_learner.ctx"], record


def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_result(tmp_path):
    root, clip_file = pets_setup(tmp_path, classes=CLASSES, per_split=(10, 2, 3))
    reference = tmp_path / "reference"
    subprocess.run(args_for(root, reference, clip_file), cwd=REPO, env=env(), check=True, capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(args_for(root, killed, clip_file), cwd=REPO, env=env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith("epoch [3/4] batch [7/"):  # in the middle of epoch 3, after checkpoint 2
            process.send_signal(signal.SIGKILL)
            break
    process.wait()
    assert process.returncode == -signal.SIGKILL, "".join(seen[-20:])
    assert not (killed / "results.json").exists()
    assert not (killed / "prompt_learner" / "model.pth.tar-3").exists()

    resumed = subprocess.run(args_for(root, killed, clip_file), cwd=REPO, env=env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from" in resumed.stdout and "(epoch 2)" in resumed.stdout

    ctx_reference, record_reference = final_state(reference)
    ctx_resumed, record_resumed = final_state(killed)
    assert torch.equal(ctx_resumed, ctx_reference)
    assert record_resumed["accuracy"] == record_reference["accuracy"]
    assert record_resumed["macro_f1"] == record_reference["macro_f1"]


def test_same_command_same_record(tmp_path):
    root, clip_file = pets_setup(tmp_path, classes=CLASSES[:4], per_split=(4, 1, 2))
    records = []
    for name in ("first", "second"):
        subprocess.run(args_for(root, tmp_path / name, clip_file)[:-2] + ["DATASET.NUM_SHOTS", "2"], cwd=REPO,
                       env=env(), check=True, capture_output=True)
        record = json.loads((tmp_path / name / "results.json").read_text())
        records.append({k: v for k, v in record.items() if k not in VOLATILE_FIELDS})
    assert records[0] == records[1]
    assert records[0]["seed"] == 3 and len(records[0]["config_sha256"]) == 64
    assert records[0]["versions"]["torch"] == torch.__version__ and records[0]["versions"]["dassl"]


def build_fewshot(root, seed, queue):
    import datasets

    datasets.register_with_dassl()  # (a spawned process has only what it imports)
    from dassl.data.datasets import build_dataset

    from trainers.config import get_cfg_default

    cfg = get_cfg_default()
    cfg.DATASET.ROOT, cfg.DATASET.NAME, cfg.DATASET.NUM_SHOTS, cfg.SEED = root, "OxfordPets", 2, seed
    queue.put((seed, sorted(d.impath for d in build_dataset(cfg).train_x)))


def test_concurrent_runs_share_the_fewshot_cache(tmp_path):
    root, _ = pets_setup(tmp_path, classes=CLASSES, per_split=(6, 2, 1))
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=build_fewshot, args=(str(root), seed, queue)) for seed in (1, 1, 1, 2, 2)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    by_seed = {}
    for seed, result in results:
        by_seed.setdefault(seed, set()).add(tuple(result))
    assert sorted(by_seed) == [1, 2]
    assert all(len(selections) == 1 for selections in by_seed.values())  # every run of a seed agrees
    assert by_seed[1] != by_seed[2]
    cache_dir = root / "oxford_pets" / "split_fewshot"
    assert sorted(p.name for p in cache_dir.iterdir()) == ["shot_2-seed_1.json", "shot_2-seed_2.json"]
    for path in cache_dir.iterdir():
        json.loads(path.read_text())  # complete files, no temporaries left behind


class RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = ""


def test_a_checkpoint_crafted_to_run_code_is_refused(tmp_path):
    from trainers.checkpoints import CheckpointError, load_checkpoint_file

    global MARKER
    MARKER = str(tmp_path / "pwned")
    path = tmp_path / "model.pth.tar-1"
    torch.save({"state_dict": {}, "epoch": 1, "payload": RunsCode()}, path)  # a real torch archive that would run code
    with pytest.raises(CheckpointError, match="could run code"):
        load_checkpoint_file(str(path))
    assert not os.path.exists(MARKER)

    # Through train.py too: the evaluation refuses it and says why.
    root, clip_file = pets_setup(tmp_path)
    model_dir = tmp_path / "model" / "prompt_learner"
    model_dir.mkdir(parents=True)
    os.replace(path, model_dir / "model.pth.tar-1")
    result = run_train(["--root", root, "--trainer", "CoOp", "--dataset-config-file", "configs/datasets/oxford_pets.yaml",
                        "--config-file", "configs/trainers/CoOp/vit_b16_ctxv1.yaml", "--output-dir", tmp_path / "ev",
                        "--eval-only", "--model-dir", tmp_path / "model", *tiny_overrides(clip_file)], check=False)
    assert result.returncode == 2 and "weights_only=True" in result.stderr
    assert not os.path.exists(MARKER)


def test_evaluation_refuses_a_non_finite_or_foreign_checkpoint_and_an_old_record_costs_nothing(tmp_path):
    """A checkpoint with NaN weights, or one written by another trainer, is refused with one message naming it; an
    earlier results.json whose ``created`` is null or holds a path is kept aside and the new record is written."""
    root, clip_file = pets_setup(tmp_path)
    common = ["--root", root, "--seed", 1, "--dataset-config-file", "configs/datasets/oxford_pets.yaml"]
    tiny = tiny_overrides(clip_file, epochs=1)  # KEY VALUE pairs: last on the command line
    coop = ["--trainer", "CoOp", "--config-file", "configs/trainers/CoOp/vit_b16_ctxv1.yaml"]
    run_train([*coop, *common, "--output-dir", tmp_path / "m", *tiny])
    checkpoint_path = tmp_path / "m" / "prompt_learner" / "model.pth.tar-1"
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    assert checkpoint["trainer"] == "CoOp"

    def evaluate(trainer_args, out):
        return run_train([*trainer_args, *common, "--output-dir", tmp_path / out, "--eval-only",
                          "--model-dir", tmp_path / "m", *tiny], check=False)

    dual = ["--trainer", "DualMIPrompt", "--config-file",
            "configs/trainers/DualMIPrompt/vit_b16_c4_ep200_batch32_ctxv1.yaml"]
    result = evaluate(dual, "foreign")
    assert result.returncode == 2 and "was written by CoOp, not DualMIPrompt" in result.stderr
    assert not (tmp_path / "foreign" / "results.json").exists()

    # An old results.json with a damaged creation time: the new evaluation still records, the old one is kept.
    (tmp_path / "ev").mkdir()
    for created in (None, "../../x/y"):
        (tmp_path / "ev" / "results.json").write_text(json.dumps({"accuracy": 1.0, "created": created}))
        assert evaluate(coop, "ev").returncode == 0
        assert json.loads((tmp_path / "ev" / "results.json").read_text())["accuracy"] > 1.0
    kept = sorted(p.name for p in (tmp_path / "ev").glob("results-*.json"))
    assert len(kept) == 2 and "xy" in "".join(kept) and not (tmp_path / "x").exists()

    checkpoint["state_dict"]["prompt_learner.ctx"][0, 0] = float("nan")
    torch.save(checkpoint, checkpoint_path)
    result = evaluate(coop, "nan")
    assert result.returncode == 2 and "prompt_learner.ctx holds NaN or infinite values" in result.stderr
    assert not (tmp_path / "nan" / "results.json").exists()
