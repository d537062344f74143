"""Speed, memory and size of each trainer's model against the reference way of computing the same thing.

For every trainer and precision it measures, on random weights of a chosen CLIP architecture:
- a training step (forward, backward and optimiser step of the training loss; median after warm-up);
- evaluation throughput (images/s over N test images and C classes);
- peak memory of a training step and of an evaluation batch (resident set size on the CPU, measured in a child
  process per case so that one case's allocations never count for another; ``max_memory_allocated`` on CUDA);
- the text-encoder pass of a training step (forward and backward over every class prompt): its floating-point
  operations, its time, and the achieved rate against this machine's measured matrix-multiply rate;
- the checkpoint size (the learned parameters only);
once with our code and once in the model's ``reference_mode`` (full 77-token prompts, class features recomputed
for every test batch, and whatever per-image loop the official code has), and prints our/reference ratios.

    python3 scripts/benchmark.py --trainers CoOp --backbone ViT-B/16 --classes 100 --batch 32
    python3 scripts/benchmark.py --trainers CoOp DualMIPrompt   # also prints "DualMIPrompt/CoOp step = ..."
    python3 scripts/benchmark.py --trainers CoOp --steps 0 --eval-images 1000 --eval-classes 1000  # evaluation only
    python3 scripts/benchmark.py --device cuda --prec amp bf16 --classes 1000
    python3 scripts/benchmark.py --quick      # tiny CLIP, a few steps (what the test suite runs)
"""
import argparse
import concurrent.futures
import contextlib
import datetime
import gc
import io
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from common.fileio import atomic_write_json  # noqa: E402
from trainers import registry  # noqa: E402  (the models only: no Dassl)
from trainers.clip_loader import (  # noqa: E402
    PRECISIONS,
    backward_and_step,
    cast_frozen_weights,
    grad_scaler,
    precision_autocast,
    random_clip,
    weights_dtype,
)

# The classes of a benchmark: real-looking names of 1 to 4 words, so that prompt lengths are realistic.
WORDS = ("red", "small", "great", "white", "spotted", "north", "common", "desert", "golden", "sea",
         "shark", "owl", "maple", "truck", "violin", "bridge", "poppy", "terrier", "canyon", "kettle")


def class_names(count):
    names = []
    for i in range(count):
        words = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(1 + i % 4)]
        names.append(" ".join(words) + f" {i}")
    return names


def benchmark_trainers():
    """The trainers with a benchmark case (declared in the trainer registry), in table order."""
    return [spec.name for spec in registry.specs() if spec.benchmark_model is not None]


MODES = ("ours", "reference")
ROW_FIELDS = ("trainer", "mode", "prec", "backbone", "device", "classes", "batch", "step_s", "cached_step_s", "eval_classes",
              "eval_images", "eval_batch", "eval_images_per_s", "train_peak_bytes", "train_rest_bytes",
              "eval_peak_bytes", "eval_rest_bytes", "text_flops", "text_s", "text_flops_per_s",
              "text_fraction_of_matmul", "checkpoint_bytes")


# ----- precision and devices -----
def check_precision(prec, device):
    """The benchmark measures what was asked or refuses: fp16 and amp exist only on CUDA."""
    if prec not in PRECISIONS:
        raise SystemExit(f"error: --prec {prec}: choose from {', '.join(PRECISIONS)}")
    if device.type != "cuda" and prec in ("fp16", "amp"):
        raise SystemExit(f"error: --prec {prec} needs a CUDA device (the trainers run it as fp32 on the CPU); "
                         "use fp32 or bf16 here.")


def autocast(prec, device):
    return precision_autocast(prec)  # as the trainers do


def build_clip(backbone, prec, device):
    return cast_frozen_weights(random_clip(backbone), weights_dtype(prec)).to(device)


def build_case(trainer, clip_model, classes, mode, device):
    model = registry.get(trainer).benchmark_model(clip_model, class_names(classes)).to(device)
    model.reference_mode = mode == "reference"
    return model


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def machine(device):
    cpu = platform.processor() or platform.machine()
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        cpu = names[0] if names else cpu
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "cpu": cpu, "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "",
        "torch": torch.__version__, "python": platform.python_version(), "commit": commit,
        "date": datetime.date.today().isoformat(),
    }


def matmul_rate(prec, device, size, repeats=5):
    """Floating-point operations per second of one square matrix multiply in the precision's compute dtype: the
    practical ceiling the text encoder (a stack of matrix multiplies) can approach on this machine."""
    dtype = {"fp16": torch.float16, "amp": torch.float16, "bf16": torch.bfloat16}.get(prec, torch.float32)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device, dtype)
    b = torch.randn(size, size, generator=generator).to(device, dtype)
    a @ b
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * size ** 3 / min(times)


# ----- the measurements -----
def make_optimizer(model, prec, device):
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    return optimizer, grad_scaler(prec)


def train_step(model, optimizer, scaler, images, labels, prec, device):
    optimizer.zero_grad()
    with autocast(prec, device):
        loss, _, _ = model.training_loss(images, labels)
    backward_and_step(loss, optimizer, scaler)


def time_steps(models, images, labels, steps, warmup, prec, device):
    """Median training-step time of each model in ``models`` (name -> model). The models take turns, one step
    each, so that a change of machine load during the run weighs on all of them alike."""
    optimizers = {name: make_optimizer(model, prec, device) for name, model in models.items()}
    times = {name: [] for name in models}
    for i in range(warmup + steps):
        for name, model in models.items():
            sync(device)
            start = time.perf_counter()
            train_step(model, *optimizers[name], images, labels, prec, device)
            sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


@torch.no_grad()
def evaluate(model, images, batch, prec, device):
    """Logits for ``images`` as the trainers' evaluation computes them: the class weights once per evaluation
    for image-independent prompts, unless in reference mode (then the model recomputes them for every batch)."""
    with autocast(prec, device):
        weights = model.evaluation_weights()
        for chunk in images.split(batch):
            model.predict(chunk, weights)


def time_evaluation(model, images, batch, prec, device):
    """Images per second over ``images``."""
    with torch.no_grad(), autocast(prec, device):
        model(images[:1])  # untimed: the first call pays one-time costs (allocator, kernel selection)
    sync(device)
    start = time.perf_counter()
    evaluate(model, images, batch, prec, device)
    sync(device)
    return len(images) / (time.perf_counter() - start)


def text_encoder_calls(model, images, labels, prec, device):
    """The text-encoder calls of one training step, as ``(args, kwargs)`` pairs to replay."""
    calls = []

    def record(module, args, kwargs):
        calls.append((tuple(a.detach() if torch.is_tensor(a) else a for a in args), dict(kwargs)))

    handle = model.text_encoder.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.no_grad(), autocast(prec, device):
            model.training_loss(images, labels)
    finally:
        handle.remove()
    return calls


def text_pass(model, calls, prec, device):
    """Forward and backward of the text encoder over the recorded prompts, as in a training step (the gradient
    flows back to the prompt embeddings and, for deep prompts, to the prompts each layer inserts)."""
    with autocast(prec, device):
        outputs = []
        for args, kwargs in calls:
            prompts = args[0].detach().requires_grad_(True)
            outputs.append(model.text_encoder(prompts, *args[1:], **kwargs).float().sum())
    torch.stack(outputs).sum().backward()


def attention_flop_formulas():
    """FLOP formulas for the CPU attention kernels, which torch's counter does not know (it counts the CUDA ones):
    the same formulas as the CUDA kernels, from the query, key and value shapes."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten

    def forward(query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_backward_flop_count(grad_out, query, key, value)

    formulas = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        formulas[aten._scaled_dot_product_flash_attention_for_cpu] = forward
        formulas[aten._scaled_dot_product_flash_attention_for_cpu_backward] = backward
    return formulas


def count_flops(function):
    """Floating-point operations of ``function()`` (matrix multiplies and attention, forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=attention_flop_formulas())
    with counter:
        function()
    return counter.get_total_flops()


def measure_text_pass(model, images, labels, prec, device, repeats):
    """``(flops, seconds)`` of the text-encoder pass of one training step (median time of ``repeats``)."""
    with torch.no_grad(), autocast(prec, device):
        model.training_loss(images, labels)  # untimed: fills caches built on first use (hand-crafted features)
    calls = text_encoder_calls(model, images, labels, prec, device)
    flops = count_flops(lambda: text_pass(model, calls, prec, device))
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        text_pass(model, calls, prec, device)
        sync(device)
        times.append(time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    return flops, statistics.median(times)


def learned_bytes(model):
    buffer = io.BytesIO()
    torch.save({n: p.detach() for n, p in model.named_parameters() if p.requires_grad}, buffer)
    return buffer.tell()


# ----- peak memory, one child process per case -----
def resident_bytes(field):
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, from /proc; ru_maxrss where there is no /proc."""
    if os.path.isfile("/proc/self/status"):
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def reset_peak(device):
    """Start a new peak from the memory in use now, so that building CLIP does not count as the phase's peak."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    # Linux: writing 5 to clear_refs resets the process's peak RSS to its current RSS. Where it cannot be reset,
    # the peak includes the build.
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")


def memory_now(device):
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else resident_bytes("VmRSS")


def memory_peak(device):
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else resident_bytes("VmHWM")


def probe_memory(spec):
    """Run in a child process: the peak memory of one training step (``phase`` train) or of the evaluation of one
    test batch (``phase`` eval, with the class features it needs) of one case, and the memory in use just before it (CLIP, model, inputs).
    One phase per process: memory freed by one phase stays in the process and would hide the next one's."""
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    clip_model = build_clip(spec["backbone"], spec["prec"], device)
    resolution = clip_model.visual.input_resolution
    train = spec["phase"] == "train"
    model = build_case(spec["trainer"], clip_model, spec["classes"] if train else spec["eval_classes"],
                       spec["mode"], device)
    generator = torch.Generator().manual_seed(0)
    count = spec["batch"] if train else spec["eval_batch"]
    images = torch.randn(count, 3, resolution, resolution, generator=generator).to(device)
    labels = torch.randint(0, spec["classes"], (count,), generator=generator).to(device)
    optimizer, scaler = make_optimizer(model, spec["prec"], device)
    gc.collect()
    rest = memory_now(device)
    reset_peak(device)
    if train:
        train_step(model.train(), optimizer, scaler, images, labels, spec["prec"], device)
    else:
        evaluate(model.eval(), images, spec["eval_batch"], spec["prec"], device)
    sync(device)
    return {"rest_bytes": rest, "peak_bytes": max(memory_peak(device), rest)}


def child_memory(spec):
    """``probe_memory(spec)`` in a process of its own (``None`` values if it fails; the reason is printed). The
    process is forked from a server that has imported the libraries (torch, CLIP, the models) and made nothing else:
    as fresh as a new interpreter, without paying an interpreter's start (seconds) for each of the dozens of probes."""
    context = multiprocessing.get_context("forkserver")
    # what this module imports (Python 3.11's forkserver does not preload '__main__' itself; a child imports this file
    # again, which is cheap once these are loaded)
    context.set_forkserver_preload(["torch", "clip", "trainers.registry", "trainers.clip_loader", "common.fileio"])
    what = f"memory probe {spec['trainer']} {spec['mode']} {spec['prec']} {spec['phase']}"
    try:
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            return pool.submit(probe_memory, spec).result()
    except concurrent.futures.process.BrokenProcessPool:
        print(f"{what} failed: its process was killed (out of memory?)", file=sys.stderr)
    except Exception as error:  # noqa: BLE001  (any failure of one probe leaves its fields unmeasured)
        print(f"{what} failed: {type(error).__name__}: {error}", file=sys.stderr)
    return {"rest_bytes": None, "peak_bytes": None}


# ----- one precision -----
def measure(trainers, args, prec, device, matmul_flops_per_s):
    torch.manual_seed(0)
    clip_model = build_clip(args.backbone, prec, device)
    resolution = clip_model.visual.input_resolution
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, resolution, resolution, generator=generator).to(device)
    labels = torch.randint(0, args.classes, (args.batch,), generator=generator).to(device)
    eval_images = torch.randn(args.eval_images, 3, resolution, resolution, generator=generator).to(device)
    rows = []
    for mode in MODES:
        models = {trainer: build_case(trainer, clip_model, args.classes, mode, device).train()
                  for trainer in trainers}
        step_times = dict.fromkeys(models)
        if args.steps:
            step_times = time_steps(models, images, labels, args.steps, args.warmup, prec, device)
        # MODEL.CACHE_IMAGE_FEATURES: a step whose images were seen before (as every few-shot image is after the
        # first epoch), for the trainers whose image encoder is frozen and unprompted.
        cached_times = dict.fromkeys(models)
        cached = {trainer: model for trainer, model in models.items() if model.image_encoder_is_frozen}
        if args.steps and mode == "ours" and cached:
            cached = {trainer: build_case(trainer, clip_model, args.classes, mode, device).train() for trainer in cached}
            for model in cached.values():
                model.use_image_cache()
            cached_times.update(time_steps(cached, images, labels, args.steps, args.warmup, prec, device))
        del cached
        for trainer, model in models.items():
            text_flops, text_s = measure_text_pass(model, images, labels, prec, device, args.text_repeats)
            model.eval()
            throughput = None
            if args.eval_images:
                model_eval = build_case(trainer, clip_model, args.eval_classes, mode, device).eval()
                throughput = time_evaluation(model_eval, eval_images, args.eval_batch, prec, device)
                del model_eval
            row = {
                "trainer": trainer, "mode": mode, "prec": prec, "backbone": args.backbone, "device": device.type,
                "classes": args.classes, "batch": args.batch, "step_s": step_times[trainer],
                "cached_step_s": cached_times[trainer],
                "eval_classes": args.eval_classes, "eval_images": args.eval_images, "eval_batch": args.eval_batch,
                "eval_images_per_s": throughput, "text_flops": text_flops, "text_s": text_s,
                "text_flops_per_s": text_flops / text_s,
                "text_fraction_of_matmul": text_flops / text_s / matmul_flops_per_s,
                "checkpoint_bytes": learned_bytes(model),
            }
            for phase, measured in (("train", args.steps), ("eval", args.eval_images)):
                memory = {"rest_bytes": None, "peak_bytes": None}
                if args.memory and measured:
                    memory = child_memory({
                        "trainer": trainer, "mode": mode, "prec": prec, "phase": phase, "device": str(device),
                        "backbone": args.backbone, "classes": args.classes, "batch": args.batch,
                        "eval_classes": args.eval_classes, "eval_batch": args.eval_batch,
                    })
                row[f"{phase}_peak_bytes"], row[f"{phase}_rest_bytes"] = memory["peak_bytes"], memory["rest_bytes"]
            rows.append({field: row[field] for field in ROW_FIELDS})
        del models
        gc.collect()
    return rows


def ratio(a, b):
    """``a / b``, or None where either was not measured."""
    return a / b if a is not None and b else None


def working_memory(row, phase):
    """Memory a phase adds on top of what it starts from (CLIP, model, inputs): what our code changes."""
    peak, rest = row[f"{phase}_peak_bytes"], row[f"{phase}_rest_bytes"]
    return None if peak is None or rest is None else peak - rest


def summarise(rows, trainers, precisions, relative_to):
    by_key = {(r["trainer"], r["mode"], r["prec"]): r for r in rows}
    ratios, relative = [], []
    for prec in precisions:
        for trainer in trainers:
            ours, reference = by_key[trainer, "ours", prec], by_key[trainer, "reference", prec]
            ratios.append({
                "trainer": trainer, "prec": prec,
                "step_time_ratio": ratio(ours["step_s"], reference["step_s"]),
                "eval_speedup": ratio(ours["eval_images_per_s"], reference["eval_images_per_s"]),
                "text_time_ratio": ours["text_s"] / reference["text_s"],
                "text_flops_ratio": ours["text_flops"] / reference["text_flops"],
                "train_peak_ratio": ratio(ours["train_peak_bytes"], reference["train_peak_bytes"]),
                "train_working_memory_ratio": ratio(working_memory(ours, "train"), working_memory(reference, "train")),
                "eval_peak_ratio": ratio(ours["eval_peak_bytes"], reference["eval_peak_bytes"]),
                "eval_working_memory_ratio": ratio(working_memory(ours, "eval"), working_memory(reference, "eval")),
            })
        # Each trainer's step against the baseline trainer's, both our code, timed in turns in this run.
        if relative_to in trainers and by_key[relative_to, "ours", prec]["step_s"] is not None:
            base = by_key[relative_to, "ours", prec]
            for trainer in trainers:
                if trainer != relative_to:
                    ours = by_key[trainer, "ours", prec]
                    relative.append({
                        "trainer": trainer, "baseline": relative_to, "prec": prec, "step_s": ours["step_s"],
                        "baseline_step_s": base["step_s"], "step_ratio": ours["step_s"] / base["step_s"],
                    })
    return ratios, relative


def mib(value):
    return "-" if value is None else f"{value / 2 ** 20:.0f}"


def number(value, scale=1.0, form=".3g", suffix=""):
    return "-" if value is None else f"{value * scale:{form}}{suffix}"


def print_report(result):
    from tabulate import tabulate

    rows, settings = result["rows"], result["settings"]
    print(tabulate(
        [[r["trainer"], r["mode"], r["prec"], number(r["step_s"], 1000, ".1f"), number(r["eval_images_per_s"]),
          mib(r["train_peak_bytes"]), mib(working_memory(r, "train")), mib(r["eval_peak_bytes"]),
          mib(working_memory(r, "eval")),
          f"{r['text_flops'] / 1e9:.3g}", f"{r['text_flops_per_s'] / 1e9:.3g}",
          f"{100 * r['text_fraction_of_matmul']:.0f}%", f"{r['checkpoint_bytes'] / 1024:.1f}"] for r in rows],
        headers=["trainer", "mode", "prec", "step ms", "eval img/s", "train peak MiB", "train +MiB",
                 "eval peak MiB", "eval +MiB", "text GFLOP", "text GFLOP/s", "of matmul", "checkpoint KiB"],
    ))
    for prec, rate in result["matmul_flops_per_s"].items():
        print(f"matmul {settings['matmul_size']}^2 {prec}: {rate / 1e9:.4g} GFLOP/s")
    for r in result["ratios"]:
        print(f"{r['trainer']} {r['prec']} ours/reference: step time {number(r['step_time_ratio'], suffix='x')}, "
              f"evaluation throughput {number(r['eval_speedup'], suffix='x')}, text pass time "
              f"{r['text_time_ratio']:.2f}x (FLOPs {r['text_flops_ratio']:.2f}x), train peak memory "
              f"{number(r['train_peak_ratio'], suffix='x')} (working {number(r['train_working_memory_ratio'], suffix='x')}"
              f"), eval peak memory {number(r['eval_peak_ratio'], suffix='x')} (working "
              f"{number(r['eval_working_memory_ratio'], suffix='x')})")
    for r in rows:
        if r["cached_step_s"] is not None:
            print(f"{r['trainer']} {r['prec']} with cached image features: step {r['cached_step_s'] * 1000:.1f} ms, "
                  f"{r['cached_step_s'] / r['step_s']:.2f}x ours")
    for entry in result["relative"]:
        print(f"{entry['trainer']}/{entry['baseline']} {entry['prec']} step = {entry['step_ratio']:.3f}x "
              f"({entry['trainer']} {entry['step_s'] * 1000:.1f} ms, {entry['baseline']} "
              f"{entry['baseline_step_s'] * 1000:.1f} ms)")
    m = result["machine"]
    print(f"{m['cpu']} ({m['cpu_cores']} cores, {m['torch_threads']} torch threads){', ' + m['gpu'] if m['gpu'] else ''}"
          f"; torch {m['torch']}; commit {m['commit']}; {m['date']}")


# --quick: the tiny CLIP and a few small steps (the test suite's smoke run).
QUICK = dict(backbone="tiny", classes=10, batch=4, steps=2, warmup=1, eval_images=8, eval_classes=10, eval_batch=4,
             text_repeats=1)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainers", nargs="+", default=benchmark_trainers(), choices=benchmark_trainers())
    parser.add_argument("--backbone", default="ViT-B/16")
    parser.add_argument("--classes", type=int, default=100, help="classes during training")
    parser.add_argument("--batch", type=int, default=32, help="training batch size")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps (0: no step timing)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--text-repeats", type=int, default=3, help="timed text-encoder passes")
    parser.add_argument("--eval-images", type=int, default=200, help="test images (0: no evaluation timing)")
    parser.add_argument("--eval-classes", type=int, default=100)
    parser.add_argument("--eval-batch", type=int, default=100)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--prec", nargs="+", default=["fp32"], help=f"any of {', '.join(PRECISIONS)}")
    parser.add_argument("--matmul-size", type=int, default=0,
                        help="side of the square matmul giving the machine's rate (default 2048 CPU, 8192 CUDA)")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip the peak-memory child processes")
    parser.add_argument("--relative-to", default="CoOp",
                        help="also print each trainer's step time relative to this trainer's (when both run)")
    parser.add_argument("--json", default="", help="write the settings, machine, rows and ratios to this JSON file")
    parser.add_argument("--quick", action="store_true", help="tiny CLIP, 2 steps: a smoke run (other options still apply)")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quick:  # new defaults: options given explicitly still win
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    device = torch.device(args.device)
    if not args.matmul_size:
        args.matmul_size = 256 if args.quick else 8192 if device.type == "cuda" else 2048
    for prec in args.prec:
        check_precision(prec, device)

    matmul = {prec: matmul_rate(prec, device, args.matmul_size) for prec in args.prec}
    rows = []
    for prec in args.prec:
        rows += measure(args.trainers, args, prec, device, matmul[prec])
    ratios, relative = summarise(rows, args.trainers, args.prec, args.relative_to)
    result = {"settings": vars(args), "machine": machine(device), "matmul_flops_per_s": matmul, "rows": rows,
              "ratios": ratios, "relative": relative}
    print_report(result)
    if args.json:
        atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
