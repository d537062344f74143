"""Image-caption pairs for pretraining the small CLIP, and zero-shot evaluation on the world's datasets.

The pretraining images come from a random stream of their own (never the datasets' images) and never show the
base classes of the suite's datasets (``catalog.pretraining_holdouts``).
"""
import numpy as np

from .attributes import COLOURS, COUNTS, PATTERNS, SHAPES
from .catalog import CATALOG, IMAGE_SIZE, WORLD_SEED, build_catalog, dataset_items, get_spec, held_out, pretraining_holdouts, seeded_rng
from .render import render
from .scenes import attribute_codes, attributes_of, describe, sample_scene

# What the pretraining stream draws: kinds of scene and rendering styles, with their probabilities.
KIND_MIX = {"object": 0.7, "count": 0.15, "texture": 0.15}
STYLE_MIX = {"photo": 0.7, "sketch": 0.1, "mosaic": 0.1, "neon": 0.1}
TEXTURE_STYLES = ("photo", "mosaic")  # a texture has no outline to draw in the line-art styles

# OpenAI CLIP's input normalisation (the same as the configs' INPUT.PIXEL_MEAN / PIXEL_STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _choice(rng, mix):
    names = list(mix)
    return names[int(rng.choice(len(names), p=np.array([mix[n] for n in names])))]


def sample_pretraining_scene(rng, holdouts):
    """A scene of the stream; its colour, pattern, shape and count are drawn again while it would show a held-out
    class (``holdouts``, see ``catalog.pretraining_holdouts``), so the kind and style mix stays as drawn."""
    kind = _choice(rng, KIND_MIX)
    style = _choice(rng, STYLE_MIX)
    if kind == "texture":
        style = style if style in TEXTURE_STYLES else "photo"
    while True:
        colour = list(COLOURS)[int(rng.integers(0, len(COLOURS)))]
        pattern = list(PATTERNS)[int(rng.integers(0, len(PATTERNS)))]
        shape = None if kind == "texture" else SHAPES[int(rng.integers(0, len(SHAPES)))]
        count = int(rng.integers(1, len(COUNTS) + 1)) if kind == "count" else 1
        if not held_out(holdouts, kind, style, dict(colour=colour, pattern=pattern, shape=shape, count=count)):
            break
    return sample_scene(rng, kind, shape, colour, pattern, count=count, style=style)


def render_pool(count, seed=WORLD_SEED, world_seed=WORLD_SEED, size=IMAGE_SIZE):
    """``(images [N, size, size, 3] uint8, scenes)``: the pretraining images, from their own random stream."""
    holdouts = pretraining_holdouts(CATALOG if world_seed == WORLD_SEED else build_catalog(world_seed))
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    scenes = []
    for index in range(count):
        scene = sample_pretraining_scene(seeded_rng(seed, "pretraining", index), holdouts)
        images[index] = render(scene, size)
        scenes.append(scene)
    return images, scenes


def caption_batch(rng, scenes):
    """``(captions, caption codes [B, 5])``: a fresh caption for each scene and the attributes it states."""
    captions, codes = [], []
    for scene in scenes:
        text, stated = describe(rng, scene)
        captions.append(text)
        codes.append(attribute_codes(stated))
    return captions, np.stack(codes)


def image_codes(scenes):
    return np.stack([attribute_codes(attributes_of(scene)) for scene in scenes])


def to_tensor(images):
    """uint8 ``[N, H, W, 3]`` -> normalised float ``[N, 3, H, W]``, as Dassl's ToTensor + Normalize do."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def dataset_images(name, split="test", per_class=None, seed=WORLD_SEED):
    """``(images uint8, labels, class names)`` of a world dataset rendered in memory (the same pixels as the
    files it writes)."""
    spec = get_spec(name)
    items = list(dataset_items(spec, seed, splits=(split,), per_class=per_class))
    images = np.stack([render(item[4], IMAGE_SIZE) for item in items])
    labels = np.array([item[2] for item in items])
    return images, labels, spec.classnames
