"""Pretrain the small CLIP of the embedded benchmark on image-caption pairs of the procedural world.

    python3 scripts/pretrain_world_clip.py            # regenerates trainers/pretrained/world_clip.{pt,json}

The model is the ``clip`` package's own ``CLIP`` class (ViT image side) with small widths, the real 77-token
context and 49,408-token BPE vocabulary, so every prompt learner runs on it unchanged. Training is contrastive
(CLIP's symmetric cross-entropy over a batch of images and captions), except that a caption which is also a true
description of another image of the batch (captions leave words out: "a star" describes every star) counts that
image as a positive too, instead of as a negative.

Deterministic: one seed fixes the model's initialisation, the pretraining images (their own random stream, never
a dataset's images, never a base class of the suite's datasets: ``catalog.pretraining_holdouts``), the captions and
the batches; the run uses a fixed number of threads and deterministic algorithms. The defaults are the settings of
the shipped weights.
The weights are saved as an fp16 state dict (loadable by ``MODEL.BACKBONE.PATH``), and a JSON file beside them
records the settings, the time taken and the zero-shot accuracies of the saved weights.
"""
import argparse
import json
import math
import os
import platform
import resource
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from common.fileio import atomic_torch_save, atomic_write_json  # noqa: E402
from datasets.world import catalog, pretraining  # noqa: E402
from datasets.world.scenes import attributes_of, consistency_matrix  # noqa: E402

DEFAULT_OUTPUT = os.path.join("trainers", "pretrained", "world_clip.pt")
# The fixed subset the tests recompute the zero-shot accuracy on: the first test images of each class.
SUBSET_PER_CLASS = 4
# Options that do not change the weights (left out of the report's settings).
NOT_SETTINGS = ("output", "log_every", "skip_eval", "evaluate_only")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default=DEFAULT_OUTPUT, help="weights file (the JSON report goes beside it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pool", type=int, default=48000, help="pretraining images (rendered once, recaptioned)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=120, help="linear warm-up steps")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--embed-dim", type=int, default=128)
    p.add_argument("--vision-width", type=int, default=128)
    p.add_argument("--vision-layers", type=int, default=4)
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--text-width", type=int, default=128)
    p.add_argument("--text-layers", type=int, default=4)
    p.add_argument("--logit-scale", type=float, default=100.0,
                   help="the logit scale saved with the weights (0: the learned one). Real CLIP learned 100 (its "
                        "ceiling); the small CLIP learns far less in a short pretraining, and the prompt learners' "
                        "gradients depend on it (zero-shot predictions do not)")
    p.add_argument("--grouped", type=int, default=0, metavar="K",
                   help="every other batch holds images of K colours only (0: every batch is drawn at random): "
                        "within such a batch colour tells little apart, so the image encoder must learn shape, "
                        "pattern and count, which it barely learns from random batches")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--skip-eval", action="store_true", help="do not evaluate the other world datasets")
    p.add_argument("--evaluate-only", action="store_true",
                   help="do not train: evaluate the weights at --output again and update the zero-shot results of "
                        "the report beside them (after a change to the world's datasets)")
    return p


def build_model(args):
    from clip.model import CLIP

    for name in ("vision_width", "text_width"):
        if getattr(args, name) % 64:
            raise SystemExit(f"--{name.replace('_', '-')} must be a multiple of 64 (CLIP uses heads of width 64)")
    torch.manual_seed(args.seed)
    return CLIP(args.embed_dim, catalog.IMAGE_SIZE, args.vision_layers, args.vision_width, args.patch, 77, 49408,
                args.text_width, args.text_width // 64, args.text_layers).float()


def parameter_groups(model, weight_decay):
    """Weight decay on the matrices of the transformers only: embeddings (rows of unused words keep their
    initial values), norms, biases and the temperature are not decayed."""
    decay, keep = [], []
    for name, param in model.named_parameters():
        matrix = param.ndim == 2 and "embedding" not in name and name not in ("text_projection", "visual.proj")
        (decay if matrix else keep).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


class Tokens:
    """``clip.tokenize`` with a cache (captions repeat a lot)."""

    def __init__(self):
        from trainers.encoders import tokenize

        self.tokenize = tokenize
        self.cache = {}

    def __call__(self, captions):
        missing = [c for c in dict.fromkeys(captions) if c not in self.cache]
        if missing:
            for caption, row in zip(missing, self.tokenize(missing)):
                self.cache[caption] = row
        return torch.stack([self.cache[c] for c in captions])


def contrastive_loss(image_features, text_features, logit_scale, positives):
    """Symmetric cross-entropy whose targets spread over every true (caption, image) pair of the batch."""
    logits = logit_scale * image_features @ text_features.t()  # [images, captions]
    targets = positives.t().float()  # positives is [captions, images]
    image_to_text = F.cross_entropy(logits, targets / targets.sum(1, keepdim=True))
    text_to_image = F.cross_entropy(logits.t(), positives.float() / positives.float().sum(1, keepdim=True))
    return (image_to_text + text_to_image) / 2


def learning_rate(step, args):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * 0.5 * (1 + math.cos(math.pi * progress))


def grouped_batch(by_colour, args, generator):
    """Indices of a batch of ``args.grouped`` colours drawn at random, as many images of each (drawn at random)."""
    chosen = torch.randperm(len(by_colour), generator=generator)[:args.grouped]
    each = args.batch // args.grouped
    parts = [by_colour[c][torch.randperm(len(by_colour[c]), generator=generator)[:each]] for c in chosen.tolist()]
    return torch.cat(parts).numpy()


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def log_line(text):
    print(text, flush=True)


def train(args, log=log_line):
    from trainers.encoders import TextEncoder, eot_positions

    model = build_model(args)
    # CLIP's own block modules (not the fused ones): the shipped weights were trained through them, and the fused
    # blocks round differently, which over 1,200 steps would give other bytes.
    text_encoder = TextEncoder(model, fused=False)
    started, cpu_started = time.time(), cpu_seconds()
    images, scenes = pretraining.render_pool(args.pool, seed=args.seed)
    codes = pretraining.image_codes(scenes)
    render_time = (time.time() - started, cpu_seconds() - cpu_started)
    log(f"Rendered {args.pool} pretraining images in {render_time[0]:.0f} s ({render_time[1]:.0f} CPU s)")

    optimizer = torch.optim.AdamW(parameter_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    tokens = Tokens()
    order_generator = torch.Generator().manual_seed(args.seed)
    colours = np.array([attributes_of(scene)["colour"] for scene in scenes])
    by_colour = [torch.from_numpy(np.flatnonzero(colours == colour)) for colour in sorted(set(colours))]
    order, position = torch.randperm(args.pool, generator=order_generator), 0
    model.train()
    running = []
    for step in range(args.steps):
        if args.grouped and step % 2:
            index = grouped_batch(by_colour, args, order_generator)
        else:
            if position + args.batch > args.pool:
                order, position = torch.randperm(args.pool, generator=order_generator), 0
            index = order[position:position + args.batch].numpy()
            position += args.batch
        rng = catalog.seeded_rng(args.seed, "captions", step)
        batch_scenes = [scenes[i] for i in index]
        captions, caption_codes = pretraining.caption_batch(rng, batch_scenes)
        positives = torch.from_numpy(consistency_matrix(caption_codes, codes[index]))
        pixels = images[index]
        flip = rng.random(len(index)) < 0.5  # horizontal flips, as the prompt learners' training transform
        pixels[flip] = pixels[flip, :, ::-1]
        x = F.normalize(model.visual(pretraining.to_tensor(pixels)), dim=-1)
        # Captions repeat within a batch: encode each distinct one once.
        distinct = {caption: i for i, caption in enumerate(dict.fromkeys(captions))}
        where = torch.tensor([distinct[c] for c in captions])
        toks = tokens(list(distinct))
        y = F.normalize(text_encoder(model.token_embedding(toks), eot_positions(toks)), dim=-1)[where]
        loss = contrastive_loss(x, y, model.logit_scale.exp().clamp(max=100), positives)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running.append(loss.item())
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            log(f"step {step + 1}/{args.steps}  loss {np.mean(running):.4f}  temperature "
                f"{model.logit_scale.exp().item():.1f}  lr {learning_rate(step, args):.2e}  "
                f"{time.time() - started:.0f} s  ({cpu_seconds() - cpu_started:.0f} CPU s)")
            running = []
    return model.eval(), {"wall_s": round(time.time() - started, 1), "cpu_s": round(cpu_seconds() - cpu_started, 1),
                          "render_wall_s": round(render_time[0], 1), "render_cpu_s": round(render_time[1], 1)}


def zero_shot_accuracy(clip_model, name, split="test", per_class=None, seed=catalog.WORLD_SEED, batch=256):
    """Zero-shot accuracy (%) of ``clip_model`` on a world dataset with its template: over all classes, and
    for the base-to-new protocol over the base (first half) and new (second half) classes, each predicted among
    its own half only, as ``DATASET.SUBSAMPLE_CLASSES`` does."""
    from trainers.zsclip_model import TemplateCLIP

    images, labels, classnames = pretraining.dataset_images(name, split, per_class, seed)
    template = catalog.get_spec(name).template
    model = TemplateCLIP(clip_model, classnames, (template,)).eval()
    with torch.no_grad():
        weights = model.class_weights()
        features = torch.cat([model.encode_image(pretraining.to_tensor(images[i:i + batch])) for i in range(0, len(images), batch)])
    scores = (features @ weights.t()).numpy()
    half = (len(classnames) + 1) // 2
    result = {"all": float(np.mean(scores.argmax(1) == labels) * 100)}
    for part, columns in (("base", slice(0, half)), ("new", slice(half, None))):
        rows = (labels < half) if part == "base" else (labels >= half)
        offset = 0 if part == "base" else half
        predicted = scores[rows][:, columns].argmax(1) + offset
        result[part] = float(np.mean(predicted == labels[rows]) * 100)
    result["images"] = int(len(labels))
    return result


def evaluate(path, skip_others=False):
    from trainers.clip_loader import load_clip

    clip_model = load_clip("WorldCLIP", path)
    results = {"world": zero_shot_accuracy(clip_model, "world"),
               "world_subset": {**zero_shot_accuracy(clip_model, "world", per_class=SUBSET_PER_CLASS),
                                "per_class": SUBSET_PER_CLASS}}
    if not skip_others:
        for name in catalog.CATALOG:
            if name != "world":
                results[name] = zero_shot_accuracy(clip_model, name)
    return results


def print_results(results):
    for name, result in results.items():
        print(f"zero-shot {name}: " + ", ".join(f"{part} {result[part]:.1f}" for part in ("all", "base", "new")))


def reevaluate(output, skip_others):
    report_path = os.path.splitext(output)[0] + ".json"
    with open(report_path) as handle:
        report = json.load(handle)
    report["zero_shot"] = evaluate(output, skip_others)
    report["world"].update(generator_version=catalog.GENERATOR_VERSION, seed=catalog.WORLD_SEED)
    atomic_write_json(report_path, report)
    return report["zero_shot"]


def main(args):
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    output = os.path.join(REPO, args.output) if not os.path.isabs(args.output) else args.output
    if args.evaluate_only:
        print_results(reevaluate(output, args.skip_eval))
        return
    model, timing = train(args)
    learned_scale = model.logit_scale.exp().item()
    if args.logit_scale:
        with torch.no_grad():
            model.logit_scale.fill_(math.log(args.logit_scale))
    state = {name: value.half() for name, value in model.state_dict().items()}
    atomic_torch_save(state, output)
    print(f"Saved {output} ({os.path.getsize(output) / 1e6:.1f} MB)")
    evaluation_started = time.time()
    results = evaluate(output, args.skip_eval)
    report = {
        "settings": {k: v for k, v in vars(args).items() if k not in NOT_SETTINGS},
        "world": {"seed": catalog.WORLD_SEED, "generator_version": catalog.GENERATOR_VERSION,
                  "image_size": catalog.IMAGE_SIZE},
        "learned_logit_scale": round(learned_scale, 2),
        "timing": {**timing, "threads": args.threads, "machine": platform.machine(),
                   "cpu_count": os.cpu_count(), "eval_wall_s": round(time.time() - evaluation_started, 1)},
        "torch": torch.__version__,
        "zero_shot": results,
        "command": "python3 scripts/pretrain_world_clip.py "
                   + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                              if k not in NOT_SETTINGS),
    }
    atomic_write_json(os.path.splitext(output)[0] + ".json", report)
    print_results(results)


if __name__ == "__main__":
    main(build_parser().parse_args())
