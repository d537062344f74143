"""Checks that need a CUDA GPU (run by scripts/gpu_check.sh on a GPU machine; skipped everywhere else).

For every trainer's model and every precision (fp16, amp with a GradScaler, bf16, fp32), on CLIPs with random
weights (the tiny test CLIP for all of them, ViT-B/16 for CoOp and DualMIPrompt at amp and bf16):
- a few SGD steps of ``training_loss`` as the trainer base runs them: the loss stays finite, the learned parameters
  and their gradients stay fp32, and the context moves;
- an evaluation as the trainer base runs it (``evaluation_weights()`` once, then ``predict`` per batch, under the
  precision's autocast): its logits agree with those of an fp32 model holding the same learned parameters
  (cosine-similarity error, tolerances below);
- the learned parameters saved from the GPU load into a CPU copy of the model (fp32) and give the fp32 GPU
  logits to float rounding.
And one end-to-end run of the real protocol scripts (base-to-new on the embedded world, CoOp) on CUDA and on the
CPU: both records' accuracies agree within one point.

What each case measured goes to ``$CUDA_CHECK_DIR/metrics.jsonl`` when that variable is set (gpu_check.sh sets
it), together with the end-to-end logs and records.
"""
import copy
import io
import json
import math
import os
import subprocess
import sys
import time
import warnings

import pytest
import torch

from trainers import registry
from trainers.clip_loader import (
    PRECISIONS,
    backward_and_step,
    cast_frozen_weights,
    grad_scaler,
    precision_autocast,
    random_clip,
    resolve_precision,
    weights_dtype,
)
from trainers.templates import DEFAULT_TEMPLATE
from trainers.zsclip_model import TemplateCLIP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA = torch.cuda.is_available()
DEVICE = "cuda"  # the device the model checks run on (a CPU dry run of this file's logic may change it)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (torch.cuda.is_available() is False); "
                                        "run scripts/gpu_check.sh on a GPU machine"),
]

TRAINERS = ("ZeroshotCLIP", "CoOp", "CoCoOp", "MaPLe", "DualMIPrompt")
PRECS = ("fp16", "amp", "bf16", "fp32")
assert set(PRECS) == set(PRECISIONS)
CLASSNAMES = ["red owl", "small white shark", "golden maple tree", "sea truck", "spotted violin", "north bridge",
              "common poppy", "desert terrier", "great canyon", "kettle"]
LR = 0.01

# Agreement of an evaluation at a precision with the fp32 evaluation of the same learned parameters, measured as
# the largest error of any cosine similarity between an image and a class: max |logits - logits_fp32| / logit scale
# (the logits are the logit scale times those cosines). Probabilities or top-1 labels are weak measures on random
# CLIP weights: their logits spread by only ~0.2-0.7 across classes (near-uniform probabilities, near-tied top-2),
# so probabilities hardly move and top-1 flips on ties; both are reported (metrics.jsonl) but not asserted. The
# cosine error is scale-free and bounded, and it is what accuracy on real weights depends on.
# fp16 (and amp, which runs the matrix multiplies in fp16) keeps 11 significant bits (unit roundoff 2^-11 ~ 4.9e-4),
# bf16 keeps 8 (2^-8 ~ 3.9e-3). Measured on these models (CPU, fp16 and bf16 weights; the GPU values go to
# metrics.jsonl): at most ~1.0e-3 for fp16 and ~6e-3 for bf16 on the tiny CLIP, ~2e-4 and ~1.4e-3 on ViT-B/16. The
# bounds are ~5x the largest of these (~10 unit roundoffs: rounding compounded over the layers), so rounding passes
# and an error beyond rounding (a part computed at a lower precision than the trainer base intends, a cast lost)
# fails. The tight check is the next one: the same parameters in fp32 on the CPU.
COS_TOL = {"fp32": 1e-6, "fp16": 5e-3, "amp": 5e-3, "bf16": 3e-2}
# The fp32 GPU model (TF32 off) against the same parameters on the CPU: float rounding in another summation order
# only (~1e-6 expected); the few training steps here move the cosines by ~1e-2, so parameters lost or
# mixed up in the round trip fail.
CPU_COS_TOL = 1e-4


# ----- helpers -----
def report(kind, **fields):
    """One line of what a case measured: printed (shown on failure) and appended to $CUDA_CHECK_DIR/metrics.jsonl."""
    line = json.dumps({"kind": kind, **fields}, default=float)
    print(line)
    folder = os.environ.get("CUDA_CHECK_DIR")
    if folder:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "metrics.jsonl"), "a") as handle:
            handle.write(line + "\n")


@pytest.fixture(autouse=True)
def exact_fp32():
    """fp32 means fp32 here: no TF32 in matrix multiplies or convolutions (cuDNN allows it by default), so that the
    fp32 GPU model is a reference for the other precisions and matches the CPU to float rounding."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def build_model(trainer, clip_model, classnames):
    if trainer == "ZeroshotCLIP":
        return TemplateCLIP(clip_model, classnames, (DEFAULT_TEMPLATE,))
    return registry.get(trainer).benchmark_model(clip_model, classnames)


def make_case(trainer, base_clip, prec, device, classnames=CLASSNAMES, seed=0):
    """The trainer's model as the trainer base builds it: CLIP's frozen weights cast for the precision, the model
    built on it, then moved to the device. The same seed gives the same initial learned parameters."""
    clip_model = cast_frozen_weights(copy.deepcopy(base_clip), weights_dtype(prec))
    torch.manual_seed(seed)
    return build_model(trainer, clip_model, classnames).to(device)


def learned(model):
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def inputs(clip_model, count, classes, device, seed=1):
    resolution = clip_model.visual.input_resolution
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(count, 3, resolution, resolution, generator=generator)
    labels = torch.randint(0, classes, (count,), generator=generator)
    return images.to(device), labels.to(device)


def train(model, images, labels, prec, steps):
    """SGD steps as ``PromptTrainer.optimize`` takes them; returns the losses and the GradScaler's last scale."""
    params = list(learned(model).values())
    optimizer = torch.optim.SGD(params, lr=LR, momentum=0.9)
    scaler = grad_scaler(prec)
    model.train()
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        with precision_autocast(prec):
            loss, logits, extra = model.training_loss(images, labels)
        assert logits.shape == (len(images), model_classes(model))
        losses.append(loss.item())
        assert math.isfinite(losses[-1]), f"{prec}: loss {losses[-1]} at step {step + 1}"
        for name, value in extra.items():
            assert math.isfinite(float(value)), f"{prec}: {name} = {float(value)} at step {step + 1}"
        backward_and_step(loss, optimizer, scaler)
        for name, p in learned(model).items():
            assert p.dtype == torch.float32, f"{prec}: learned {name} became {p.dtype}"
            assert p.grad is None or p.grad.dtype == torch.float32, f"{prec}: gradient of {name} is {p.grad.dtype}"
            assert torch.isfinite(p).all(), f"{prec}: {name} holds NaN or inf after step {step + 1}"
    return losses, (scaler.get_scale() if scaler is not None else None)


def model_classes(model):
    learner = getattr(model, "prompt_learner", None)
    return learner.n_classes if learner is not None else len(model.classnames)


@torch.no_grad()
def evaluate(model, images, prec, batch):
    """Logits as ``PromptTrainer.test`` computes them: the class weights once, then ``predict`` per batch."""
    model.eval()
    with precision_autocast(prec):
        weights = model.evaluation_weights()
        return torch.cat([model.predict(chunk, weights).float() for chunk in images.split(batch)])


def agreement(logits, reference, scale):
    """``(max cosine error, max probability error, top-1 agreement)`` of ``logits`` against the fp32 ``reference``
    (``scale``: the fp32 model's logit scale)."""
    cos_gap = ((logits - reference).abs().max() / scale).item()
    prob_gap = (logits.softmax(-1) - reference.softmax(-1)).abs().max().item()
    top1 = (logits.argmax(-1) == reference.argmax(-1)).float().mean().item()
    return cos_gap, prob_gap, top1


def roundtrip_to_cpu(state):
    """A state dict of GPU tensors, saved and loaded back on the CPU as a checkpoint is (weights_only)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, map_location="cpu", weights_only=True)


def load_learned(model, state):
    params = learned(model)
    assert set(state) == set(params), (sorted(state), sorted(params))
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(state[name])


def check_case(trainer, base_clip, prec, *, batch, steps, eval_images, label):
    device = torch.device(DEVICE)
    assert resolve_precision(prec, device) == prec  # every precision runs as itself on CUDA
    torch.cuda.synchronize()
    started = time.perf_counter()
    model = make_case(trainer, base_clip, prec, device)
    images, labels = inputs(model.clip, batch, len(CLASSNAMES), device)
    test_images, _ = inputs(model.clip, eval_images, len(CLASSNAMES), device, seed=2)
    initial = {name: p.detach().clone() for name, p in learned(model).items()}
    for name, p in initial.items():
        assert p.dtype == torch.float32 and p.device.type == device.type, (name, p.dtype, p.device)

    losses, scale, changed = [], None, []
    if initial:
        # amp: the GradScaler skips each step whose scaled fp16 gradients overflow and halves its scale (2**16 at
        # first). DualMIPrompt's critics divide by temperatures of 0.005 to 0.07, so its gradients are larger and the
        # scaler needs more halvings than CoOp's (on the H200: 6 for the tiny CLIP, 4 for ViT-B/16): give it room.
        steps = steps + 8 if prec == "amp" else steps
        losses, scale = train(model, images, labels, prec, steps)
        changed = [name for name, p in learned(model).items() if not torch.equal(p.detach(), initial[name])]
        assert "prompt_learner.ctx" in changed, f"{prec}: the context did not move in {steps} steps ({changed})"

    logits = evaluate(model, test_images, prec, batch)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()

    # The same learned parameters through a checkpoint-like round trip (saved from the GPU, loaded on the CPU) ...
    state = roundtrip_to_cpu({name: p.detach() for name, p in learned(model).items()})
    for name, tensor in state.items():
        assert tensor.device.type == "cpu" and tensor.dtype == torch.float32, (name, tensor.device, tensor.dtype)
        assert torch.equal(tensor, learned(model)[name].detach().cpu()), name
    # ... into an fp32 model on the GPU: the reference for this precision ...
    reference_model = model if prec == "fp32" else make_case(trainer, base_clip, "fp32", device)
    load_learned(reference_model, state)
    reference = evaluate(reference_model, test_images, "fp32", batch)
    logit_scale = reference_model.logit_scale.item()
    cos_gap, prob_gap, top1 = agreement(logits, reference, logit_scale)

    # ... and into an fp32 copy of the model on the CPU, which must give the fp32 GPU logits.
    cpu_model = make_case(trainer, base_clip, "fp32", "cpu")
    load_learned(cpu_model, state)
    cpu_logits = evaluate(cpu_model, test_images.cpu(), "fp32", batch)
    cpu_gap = ((cpu_logits - reference.cpu()).abs().max() / logit_scale).item()
    torch.cuda.synchronize()
    report("model", case=label, trainer=trainer, prec=prec, steps=len(losses), first_loss=losses[0] if losses else None,
           last_loss=losses[-1] if losses else None, grad_scale=scale, changed=len(changed), learned=len(initial),
           cos_gap=cos_gap, cos_tol=COS_TOL[prec], prob_gap=prob_gap, top1_agree=top1,
           logit_spread=reference.std(-1).mean().item(), cpu_cos_gap=cpu_gap,
           seconds=round(time.perf_counter() - started, 2))

    assert cos_gap <= COS_TOL[prec], (f"{trainer} {prec}: logits differ from fp32 by {cos_gap:.3g} of the logit "
                                      f"scale (tolerance {COS_TOL[prec]})")
    assert cpu_gap <= CPU_COS_TOL, f"{trainer}: CPU logits differ from the GPU's by {cpu_gap:.3g} of the logit scale"


# ----- every trainer, every precision, tiny CLIP -----
@pytest.fixture(scope="module")
def tiny_clip():
    return random_clip("tiny", seed=0)


@pytest.mark.parametrize("prec", PRECS)
@pytest.mark.parametrize("trainer", TRAINERS)
def test_tiny_clip_trains_and_evaluates(tiny_clip, trainer, prec):
    check_case(trainer, tiny_clip, prec, batch=16, steps=6, eval_images=32, label="tiny")


# ----- ViT-B/16 (random weights) -----
@pytest.fixture(scope="module")
def vit_clip():
    return random_clip("ViT-B/16", seed=0)


@pytest.mark.parametrize("prec", ["amp", "bf16"])
@pytest.mark.parametrize("trainer", ["CoOp", "DualMIPrompt"])
def test_vit_b16_trains_and_evaluates(vit_clip, trainer, prec):
    check_case(trainer, vit_clip, prec, batch=8, steps=5, eval_images=8, label="ViT-B/16")


# ----- the real scripts on the embedded world, CUDA against CPU -----
E2E_EPOCHS = int(os.environ.get("CUDA_E2E_EPOCHS", "10"))
E2E_TIMEOUT = int(os.environ.get("CUDA_E2E_TIMEOUT", "300"))


def run_protocol(device, data, output, logs):
    """``base2new_train.sh`` then ``base2new_test.sh`` (world, seed 1, CoOp) on ``device``; the two records."""
    env = {key: value for key, value in os.environ.items() if key not in ("TRAINER", "CONFIG")}
    env.update(DATA=data, OUTPUT=output, SHOTS="16", PYTHON=sys.executable, DUALMI_ENV_INFO="0", PYTHONUNBUFFERED="1")
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    overrides = ["OPTIM.MAX_EPOCH", str(E2E_EPOCHS), "DATALOADER.NUM_WORKERS", "4",
                 "USE_CUDA", "True" if device == "cuda" else "False"]
    records = {}
    for script, split in (("base2new_train.sh", "train_base"), ("base2new_test.sh", "test_new")):
        log = os.path.join(logs, f"e2e_{device}_{script[:-3]}.log")
        started = time.perf_counter()
        with open(log, "w") as handle:
            done = subprocess.run(["bash", f"scripts/{script}", "world", "1", "CoOp", "--", *overrides], cwd=ROOT,
                                  env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=E2E_TIMEOUT)
        with open(log) as handle:
            text = handle.read()
        if done.returncode != 0:
            pytest.fail(f"{script} on {device} failed with exit status {done.returncode}:\n{text[-4000:]}")
        assert f"USE_CUDA: {device == 'cuda'}" in text, f"{script} on {device}: USE_CUDA not as asked"
        path = os.path.join(output, "base2new", split, "world", "shots_16", "CoOp", "world", "seed1", "results.json")
        with open(path) as handle:
            records[split] = json.load(handle)
        report("e2e_step", device=device, script=script, seconds=round(time.perf_counter() - started, 1),
               accuracy=records[split]["accuracy"], num_images=records[split]["num_images"])
    return records


@pytest.mark.integration
def test_world_base_to_new_gives_the_same_accuracy_on_cuda_and_cpu(tmp_path):
    """Same seed, same data order and augmentations (same loader workers): CUDA and CPU differ only by float
    rounding (and cuDNN's algorithm choice), which over 10 short epochs moves the accuracy by far less than one
    point of the 2,000 test images."""
    logs = os.environ.get("CUDA_CHECK_DIR") or str(tmp_path / "logs")
    os.makedirs(logs, exist_ok=True)
    data = str(tmp_path / "data")
    results = {device: run_protocol(device, data, str(tmp_path / f"out_{device}"), logs) for device in ("cuda", "cpu")}
    for split in ("train_base", "test_new"):
        cuda, cpu = results["cuda"][split], results["cpu"][split]
        report("e2e", split=split, cuda_accuracy=cuda["accuracy"], cpu_accuracy=cpu["accuracy"],
               cuda_macro_f1=cuda["macro_f1"], cpu_macro_f1=cpu["macro_f1"], epochs=E2E_EPOCHS,
               cuda_train_s=cuda["train_time_s"], cpu_train_s=cpu["train_time_s"])
        assert (cuda["num_images"], cuda["num_classes"], cuda["epoch"]) == (cpu["num_images"], cpu["num_classes"],
                                                                            cpu["epoch"])
        assert cuda["epoch"] == E2E_EPOCHS
        assert abs(cuda["accuracy"] - cpu["accuracy"]) <= 1.0, (split, cuda["accuracy"], cpu["accuracy"])
