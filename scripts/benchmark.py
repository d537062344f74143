"""Speed and size of each trainer's model against the reference way of computing the same thing.

For every trainer it times, on random weights of a chosen CLIP architecture:
- a training step (forward, backward and optimiser step of the training loss; median after warm-up);
- evaluation throughput (images/s over N test images and C classes);
- the checkpoint size (the learned parameters only);
once with our code and once in the model's ``reference_mode`` (full 77-token prompts, class features recomputed
for every test batch, and whatever per-image loop the official code has), and prints our/reference ratios.

    python3 scripts/benchmark.py --trainers CoOp --backbone ViT-B/16 --classes 100 --batch 32
    python3 scripts/benchmark.py --trainers CoOp DualMIPrompt   # also prints "DualMIPrompt/CoOp step = ..."
    python3 scripts/benchmark.py --quick      # tiny CLIP, a few steps (what the test suite runs)
"""
import argparse
import io
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainers.clip_loader import random_clip  # noqa: E402

# The classes of a benchmark: real-looking names of 1 to 4 words, so that prompt lengths are realistic.
WORDS = ("red", "small", "great", "white", "spotted", "north", "common", "desert", "golden", "sea",
         "shark", "owl", "maple", "truck", "violin", "bridge", "poppy", "terrier", "canyon", "kettle")


def class_names(count):
    names = []
    for i in range(count):
        words = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(1 + i % 4)]
        names.append(" ".join(words) + f" {i}")
    return names


def build_coop(clip_model, classnames):
    from trainers.coop_model import CoOpCLIP

    return CoOpCLIP(clip_model, classnames, n_ctx=4, ctx_init="a photo of a")


def build_cocoop(clip_model, classnames):
    from trainers.cocoop_model import CoCoOpCLIP

    return CoCoOpCLIP(clip_model, classnames, n_ctx=4, ctx_init="a photo of a")


def build_maple(clip_model, classnames):
    from trainers.maple_model import MaPLeCLIP

    # The official depth 9 assumes 12 layers; a smaller CLIP (--quick) gets as many as it has.
    depth = min(9, len(clip_model.transformer.resblocks), len(clip_model.visual.transformer.resblocks))
    return MaPLeCLIP(clip_model, classnames, n_ctx=2, ctx_init="a photo of a", prompt_depth=depth)


def build_dualmiprompt(clip_model, classnames):
    from trainers.dualmiprompt_model import DualMIOptions, DualMIPromptCLIP
    from trainers.templates import DEFAULT_TEMPLATE

    return DualMIPromptCLIP(clip_model, classnames, (DEFAULT_TEMPLATE,), DualMIOptions())


# Trainer name -> function building its model from (frozen CLIP, class names) with its default settings.
CASES = {
    "CoOp": build_coop,
    "CoCoOp": build_cocoop,
    "MaPLe": build_maple,
    "DualMIPrompt": build_dualmiprompt,
}


def learned_bytes(model):
    buffer = io.BytesIO()
    torch.save({n: p.detach() for n, p in model.named_parameters() if p.requires_grad}, buffer)
    return buffer.tell()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(models, images, labels, steps, warmup, device):
    """Median training-step time of each model in ``models`` (name -> model). The models take turns, one step
    each, so that a change of machine load during the run weighs on all of them alike."""
    optimizers = {
        name: torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
        for name, model in models.items()
    }
    times = {name: [] for name in models}
    for i in range(warmup + steps):
        for name, model in models.items():
            sync(device)
            start = time.perf_counter()
            optimizers[name].zero_grad()
            loss, _, _ = model.training_loss(images, labels)
            loss.backward()
            optimizers[name].step()
            sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


@torch.no_grad()
def time_evaluation(model, images, batch, device):
    """Images per second over ``images``; class weights once per evaluation unless in reference mode."""
    model(images[:1])  # untimed: the first call pays one-time costs (allocator, kernel selection)
    sync(device)
    start = time.perf_counter()
    weights = None
    if model.image_independent and not model.reference_mode:
        weights = model.class_weights()
    for chunk in images.split(batch):
        if weights is None:
            model(chunk)
        else:
            model.logits(model.encode_image(chunk), weights)
    sync(device)
    return len(images) / (time.perf_counter() - start)


def measure(trainers, args, device):
    clip_model = random_clip(args.backbone).to(device)
    resolution = clip_model.visual.input_resolution
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, resolution, resolution, generator=generator).to(device)
    labels = torch.randint(0, args.classes, (args.batch,), generator=generator).to(device)
    eval_images = torch.randn(args.eval_images, 3, resolution, resolution, generator=generator).to(device)
    rows = []
    for reference in (False, True):
        models = {}
        for trainer in trainers:
            model = CASES[trainer](clip_model, class_names(args.classes)).to(device)
            model.reference_mode = reference
            models[trainer] = model.train()
        step_times = time_steps(models, images, labels, args.steps, args.warmup, device)
        for trainer, model in models.items():
            model.eval()
            model_eval = CASES[trainer](clip_model, class_names(args.eval_classes)).to(device)
            model_eval.reference_mode = reference
            throughput = time_evaluation(model_eval.eval(), eval_images, args.eval_batch, device)
            rows.append({
                "trainer": trainer, "mode": "reference" if reference else "ours", "backbone": args.backbone,
                "device": device.type, "classes": args.classes, "batch": args.batch, "step_s": step_times[trainer],
                "eval_classes": args.eval_classes, "eval_images": args.eval_images,
                "eval_images_per_s": throughput, "checkpoint_bytes": learned_bytes(model),
            })
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainers", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--backbone", default="ViT-B/16")
    parser.add_argument("--classes", type=int, default=100, help="classes during training")
    parser.add_argument("--batch", type=int, default=32, help="training batch size")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--eval-images", type=int, default=200)
    parser.add_argument("--eval-classes", type=int, default=100)
    parser.add_argument("--eval-batch", type=int, default=100)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--relative-to", default="CoOp",
                        help="also print each trainer's step time relative to this trainer's (when both run)")
    parser.add_argument("--json", default="", help="write the rows and ratios to this JSON file")
    parser.add_argument("--quick", action="store_true", help="tiny CLIP, 2 steps: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.backbone, args.classes, args.batch, args.steps, args.warmup = "tiny", 10, 4, 2, 1
        args.eval_images, args.eval_classes, args.eval_batch = 8, 10, 4
    device = torch.device(args.device)
    torch.manual_seed(0)

    rows = measure(args.trainers, args, device)
    by_key = {(row["trainer"], row["mode"]): row for row in rows}
    ratios = []
    for trainer in args.trainers:
        ours, reference = by_key[trainer, "ours"], by_key[trainer, "reference"]
        ratios.append({
            "trainer": trainer,
            "step_time_ratio": ours["step_s"] / reference["step_s"],
            "eval_speedup": ours["eval_images_per_s"] / reference["eval_images_per_s"],
        })
    # Each trainer's step against the baseline trainer's, both our code, timed in turns in this run.
    relative = []
    if args.relative_to in args.trainers:
        base = by_key[args.relative_to, "ours"]
        for trainer in args.trainers:
            if trainer != args.relative_to:
                ours = by_key[trainer, "ours"]
                relative.append({
                    "trainer": trainer, "baseline": args.relative_to, "step_s": ours["step_s"],
                    "baseline_step_s": base["step_s"], "step_ratio": ours["step_s"] / base["step_s"],
                })

    from tabulate import tabulate

    print(tabulate(
        [[r["trainer"], r["mode"], f"{r['step_s'] * 1000:.1f}", f"{r['eval_images_per_s']:.3g}",
          f"{r['checkpoint_bytes'] / 1024:.1f}"] for r in rows],
        headers=["trainer", "mode", "step ms", "eval img/s", "checkpoint KiB"],
    ))
    for ratio in ratios:
        print(f"{ratio['trainer']}: step time ours/reference = {ratio['step_time_ratio']:.2f}x, "
              f"evaluation throughput ours/reference = {ratio['eval_speedup']:.2f}x")
    for entry in relative:
        print(f"{entry['trainer']}/{entry['baseline']} step = {entry['step_ratio']:.3f}x "
              f"({entry['trainer']} {entry['step_s'] * 1000:.1f} ms, {entry['baseline']} "
              f"{entry['baseline_step_s'] * 1000:.1f} ms)")
    result = {"settings": vars(args), "rows": rows, "ratios": ratios, "relative": relative}
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return result


if __name__ == "__main__":
    main()
