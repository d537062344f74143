"""Quick calibration of the embedded world against the baselines whose image encoder is frozen and unprompted.

    python3 scripts/calibrate_world.py                                # the suite's datasets, ZS / CoOp / KgCoOp
    python3 scripts/calibrate_world.py --datasets world --seeds 1 2 3 --image-seed 7
    python3 scripts/calibrate_world.py --clip /path/to/other_world_clip.pt --epochs 100
    python3 scripts/calibrate_world.py --attributes 6000          # what the image features can tell apart
    python3 scripts/calibrate_world.py --trainers ZeroshotCLIP CoOp LinearProbe   # and what they hold per dataset

Designing a world that behaves like the real benchmark (a context learned on the base classes gains on them and
loses what zero-shot CLIP knows of the new ones) takes many trials. For zero-shot CLIP, CoOp and KgCoOp the image
encoder is frozen, so each image's features are computed once (and once more mirrored, the world configs' only
augmentation) and the context is trained on those features: a dataset takes a minute or two. The models
and losses are the trainers' own (``CoOpCLIP``, ``KgCoOpCLIP``); the loop imitates the `world` configs (SGD with
momentum 0.9 and weight decay 5e-4, batch 32, one warm-up epoch at 1e-5, then cosine from ``--lr``), but it is not
Dassl's loop and its few-shot draws are its own, so its numbers are close to the suite's, not equal to them. The
suite (``scripts/suite.py``) stays the measurement; this is the sketchpad.

Calibrate on another image seed than the suite's (``--image-seed``, default 7): the classes are the same, the images
are not the ones the suite tests on. For each dataset it prints base and new accuracy, their HM, the change from
zero-shot CLIP, and the mean cosine between each class's learned and hand-crafted features (how far the context moved
the class features; KgCoOp reports that the further they move, the more new-class accuracy is lost).
"""
import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from datasets.world import catalog, pretraining  # noqa: E402

TRAINERS = ("ZeroshotCLIP", "CoOp", "KgCoOp")
# Not a trainer: a logistic regression per half on the same few-shot images' frozen features (and their mirrored
# copies). What the image features hold beyond the hand-crafted prompt: the headroom a learned context can win.
LINEAR_PROBE = "LinearProbe"
DEFAULT_CLIP = os.path.join(REPO, "trainers", "pretrained", "world_clip.pt")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(catalog.SUITE), help="world datasets (catalog names)")
    p.add_argument("--trainers", nargs="+", default=list(TRAINERS), choices=(*TRAINERS, LINEAR_PROBE),
                   help=f"{LINEAR_PROBE}: a linear read-out of the image features trained on each half's --shots "
                        "images per class (the most a prompt of the text side could get from those features)")
    p.add_argument("--clip", default=DEFAULT_CLIP, help="world CLIP weights")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--n-ctx", type=int, default=4, help="context tokens, initialised from the first words of "
                                                         "'a photo of a'")
    p.add_argument("--kg-weight", type=float, default=8.0, help="KgCoOp's W")
    p.add_argument("--image-seed", type=int, default=7, help="the world's image seed (the suite tests on 0)")
    p.add_argument("--split", choices=("val", "test"), default="test", help="the images accuracy is measured on")
    p.add_argument("--logit-scale", type=float, default=None,
                   help="replace the CLIP's learned logit scale (the world CLIP learned about 21; real CLIP's is 100): "
                        "zero-shot predictions do not change, the prompt learners' gradients do")
    p.add_argument("--attributes", type=int, default=0, metavar="N",
                   help="instead of the table: how well the frozen image features tell each attribute (shape, "
                        "colour, pattern, count) apart, as the accuracy of a linear probe trained on 2/3 of N images "
                        "of the pretraining stream (a stream seed of its own) and tested on the rest")
    p.add_argument("--threads", type=int, default=2)
    return p


class CachedImages:
    """The frozen CLIP's normalised image features of a dataset split, and of its mirrored images."""

    def __init__(self, clip_model, name, split, image_seed):
        images, labels, _ = pretraining.dataset_images(name, split, seed=image_seed)
        self.labels = torch.from_numpy(labels)
        self.features = self._encode(clip_model, images)
        self.mirrored = self._encode(clip_model, images[:, :, ::-1]) if split == "train" else None

    @staticmethod
    def _encode(clip_model, images, batch=500):
        with torch.no_grad():
            return torch.cat([F.normalize(clip_model.encode_image(pretraining.to_tensor(images[i:i + batch])).float(),
                                          dim=-1) for i in range(0, len(images), batch)])


def halves(classnames):
    half = (len(classnames) + 1) // 2
    return {"base": list(range(half)), "new": list(range(half, len(classnames)))}


def build_model(trainer, clip_model, classnames, template, args):
    from trainers.coop_model import CoOpCLIP
    from trainers.kgcoop_model import KgCoOpCLIP

    ctx_init = " ".join("a photo of a".split()[:args.n_ctx]) if args.n_ctx <= 4 else ""
    if trainer == "KgCoOp":
        model = KgCoOpCLIP(clip_model, classnames, template, n_ctx=args.n_ctx, ctx_init=ctx_init, w=args.kg_weight)
    else:
        model = CoOpCLIP(clip_model, classnames, n_ctx=args.n_ctx, ctx_init=ctx_init)
    model.encode_image = lambda features: features  # the "images" this loop feeds are the cached features
    return model


def learning_rate(epoch, args):
    """Dassl's schedule in the world configs: one constant warm-up epoch at 1e-5, then cosine over the rest."""
    if epoch == 0:
        return 1e-5
    return args.lr * 0.5 * (1 + np.cos(np.pi * (epoch - 1) / max(1, args.epochs - 1)))


def fewshot_indices(labels, classes, shots, generator):
    chosen = []
    for label in classes:
        members = torch.nonzero(labels == label).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:shots]])
    return torch.cat(chosen)


def train_context(trainer, clip_model, spec, train, args, seed):
    """The trained model of ``trainer`` on the base classes' ``--shots`` images per class."""
    base = halves(spec.classnames)["base"]
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build_model(trainer, clip_model, [spec.classnames[c] for c in base], spec.template, args).train()
    chosen = fewshot_indices(train.labels, base, args.shots, generator)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=args.lr, momentum=0.9,
                                weight_decay=5e-4)
    batches = max(1, len(chosen) // args.batch)  # Dassl drops the last incomplete batch
    for epoch in range(args.epochs):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(epoch, args)
        order = chosen[torch.randperm(len(chosen), generator=generator)]
        for b in range(batches):
            index = order[b * args.batch:(b + 1) * args.batch]
            mirror = torch.rand(len(index), generator=generator) < 0.5
            features = torch.where(mirror[:, None], train.mirrored[index], train.features[index])
            loss, _, _ = model.training_loss(features, train.labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def evaluate(trainer, clip_model, spec, context, test, args):
    """``{part: (accuracy, mean cos(learned, hand-crafted))}`` for the base and the new half, each classified among
    its own classes as ``DATASET.SUBSAMPLE_CLASSES`` does; ``context`` None is zero-shot CLIP."""
    from trainers.encoders import template_features

    result = {}
    for part, classes in halves(spec.classnames).items():
        names = [spec.classnames[c] for c in classes]
        model = build_model("CoOp", clip_model, names, spec.template, args).eval()
        with torch.no_grad():
            hand = template_features(clip_model, model.text_encoder, names, (spec.template,)).float()
            if context is not None:
                model.prompt_learner.ctx.copy_(context)
            weights = hand if context is None else model.class_weights()
            rows = torch.isin(test.labels, torch.tensor(classes))
            predicted = (test.features[rows] @ weights.t()).argmax(1) + classes[0]
            accuracy = float((predicted == test.labels[rows]).float().mean() * 100)
            result[part] = (accuracy, float(F.cosine_similarity(weights, hand, dim=1).mean()))
    return result


def linear_probe(spec, train, test, args, seed):
    """``{part: (accuracy, nan)}``: a logistic regression on each half's ``--shots`` images per class (drawn as a
    context's are) and their mirrored copies, tested among that half's classes."""
    from sklearn.linear_model import LogisticRegression

    result = {}
    for part, classes in halves(spec.classnames).items():
        chosen = fewshot_indices(train.labels, classes, args.shots, torch.Generator().manual_seed(seed))
        features = torch.cat([train.features[chosen], train.mirrored[chosen]]).numpy()
        labels = torch.cat([train.labels[chosen], train.labels[chosen]]).numpy()
        probe = LogisticRegression(C=10, max_iter=3000).fit(features, labels)
        rows = torch.isin(test.labels, torch.tensor(classes))
        result[part] = (float(probe.score(test.features[rows].numpy(), test.labels[rows].numpy()) * 100), np.nan)
    return result


def harmonic_mean(base, new):
    return 2 * base * new / (base + new) if base + new else 0.0


def calibrate(args, log=print):
    from trainers.clip_loader import load_clip

    clip_model = load_clip("WorldCLIP", args.clip)
    if args.logit_scale is not None:
        clip_model.logit_scale.data.fill_(float(np.log(args.logit_scale)))
    rows = []
    for name in args.datasets:
        started = time.time()
        spec = catalog.get_spec(name)
        train = CachedImages(clip_model, name, "train", args.image_seed)
        test = CachedImages(clip_model, name, args.split, args.image_seed)
        for trainer in args.trainers:
            if trainer == LINEAR_PROBE:
                runs = [linear_probe(spec, train, test, args, seed) for seed in args.seeds]
            else:
                runs = [evaluate(trainer, clip_model, spec, None, test, args)] if trainer == "ZeroshotCLIP" else [
                    evaluate(trainer, clip_model, spec,
                             train_context(trainer, clip_model, spec, train, args, seed).prompt_learner.ctx.detach(),
                             test, args)
                    for seed in args.seeds]
            mean = {part: tuple(np.mean([run[part][i] for run in runs]) for i in range(2)) for part in ("base", "new")}
            rows.append({"dataset": name, "trainer": trainer, "base": mean["base"][0], "new": mean["new"][0],
                         "cos_base": mean["base"][1], "cos_new": mean["new"][1],
                         "hm": harmonic_mean(mean["base"][0], mean["new"][0])})
        log(f"{name}: {time.time() - started:.0f} s")
    return rows


# The pretraining stream's seed for the attribute probe: never the pretraining's own images (seed 0).
PROBE_STREAM_SEED = 99


def attribute_probe(clip_model, count):
    """``{attribute: (classes, accuracy %)}``: a logistic-regression probe per attribute on the frozen, normalised
    image features of ``count`` pretraining-stream images, trained on the first 2/3 and tested on the rest. A
    prompt learner of the text side alone cannot do better than what the image features hold: an attribute the
    probe cannot read is one no context will learn."""
    from sklearn.linear_model import LogisticRegression

    from datasets.world.scenes import attributes_of

    images, scenes = pretraining.render_pool(count, seed=PROBE_STREAM_SEED)
    features = CachedImages._encode(clip_model, images).numpy()
    attributes = [attributes_of(scene) for scene in scenes]
    result = {}
    for key in ("shape", "colour", "pattern", "count"):
        rows = [i for i, found in enumerate(attributes) if found.get(key) is not None and found.get(key) != 0]
        labels = np.array([str(attributes[i][key]) for i in rows])
        cut = len(rows) * 2 // 3
        probe = LogisticRegression(C=10, max_iter=3000).fit(features[rows[:cut]], labels[:cut])
        result[key] = (len(set(labels)), float(probe.score(features[rows[cut:]], labels[cut:]) * 100))
    return result


def format_table(rows):
    zero_shot = {row["dataset"]: row for row in rows if row["trainer"] == "ZeroshotCLIP"}
    lines = ["| dataset | trainer | base | new | HM | base − ZS | new − ZS | cos base | cos new |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        zs = zero_shot.get(row["dataset"])
        change = (f"{row['base'] - zs['base']:+.2f} | {row['new'] - zs['new']:+.2f}" if zs else "- | -")
        cosines = " | ".join("-" if np.isnan(row[key]) else f"{row[key]:.3f}" for key in ("cos_base", "cos_new"))
        lines.append(f"| {row['dataset']} | {row['trainer']} | {row['base']:.2f} | {row['new']:.2f} | {row['hm']:.2f} "
                     f"| {change} | {cosines} |")
    return "\n".join(lines)


def main(argv=None):
    args = build_parser().parse_args(argv)
    unknown = [name for name in args.datasets if name not in catalog.CATALOG]
    if unknown:
        print(f"calibrate_world.py: unknown world dataset(s) {', '.join(unknown)}; known: "
              f"{', '.join(catalog.CATALOG)}", file=sys.stderr)
        return 2
    test_only = [name for name in args.datasets if catalog.get_spec(name).test_only]
    if test_only:
        print(f"calibrate_world.py: {', '.join(test_only)} has no training images (a domain-generalisation target)",
              file=sys.stderr)
        return 2
    if args.attributes < 0 or 0 < args.attributes < 300:
        print(f"calibrate_world.py: --attributes needs 300 images or more (a probe per attribute); got "
              f"{args.attributes}", file=sys.stderr)
        return 2
    if args.logit_scale is not None and not args.logit_scale > 0:
        print(f"calibrate_world.py: --logit-scale must be positive; got {args.logit_scale}", file=sys.stderr)
        return 2
    if not os.path.isfile(args.clip):
        print(f"calibrate_world.py: no CLIP weights at {args.clip}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    if args.attributes:
        from trainers.clip_loader import load_clip

        probe = attribute_probe(load_clip("WorldCLIP", args.clip), args.attributes)
        print("| attribute | values | linear-probe accuracy |\n|---|---|---|")
        for key, (values, accuracy) in probe.items():
            print(f"| {key} | {values} | {accuracy:.1f} |")
        return 0
    print(format_table(calibrate(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
