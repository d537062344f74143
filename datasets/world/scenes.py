"""Sampling scenes and the captions that describe them.

A scene is decided entirely here, from a ``numpy`` random generator: which attributes its objects have and the
nuisances (position, size, rotation, colour jitter, pattern scale, lighting, background, clutter, noise). Captions
state some of the attributes in words; ``attributes_of`` recomputes a scene's attributes from its parameters, and
``consistent`` says whether a caption is a true description of a scene (the caption may leave words out).
"""
import math

import numpy as np

from .attributes import (
    COLOURS,
    COUNTS,
    LARGE_RADIUS,
    PATTERNS,
    SHAPES,
    SMALL_RADIUS,
    STYLE_PHRASES,
    STYLES,
    count_name,
    object_name,
)
from .render import Scene, Stroke, Thing, hsv_to_rgb

KINDS = ("object", "count", "texture")

# How strong the nuisances are: the most clutter strokes, and the largest pixel noise (photo style; the other
# styles get 40% of it).
NUISANCE = {"max_clutter": 5, "max_noise": 12.0}

# Objects stand upright, tilted by at most this many degrees, as photographed things mostly do. At any rotation
# the small ViT hardly learns shape: a linear probe on the world CLIP's image features told 10 shapes apart 30.5%
# of the time after pretraining on objects at any rotation, 56.9% on upright ones (calibrate_world.py --attributes).
MAX_TILT = 20.0


def _uniform(rng, low, high):
    return float(rng.uniform(low, high))


def jittered_rgb(rng, colour):
    hue, saturation, value = COLOURS[colour]
    return hsv_to_rgb(hue + _uniform(rng, -8, 8), min(1.0, saturation * _uniform(rng, 0.85, 1.1)),
                      min(1.0, value * _uniform(rng, 0.85, 1.05)))


def _pattern_frequency(rng, pattern, style):
    low, high = (1.6, 2.4) if pattern == "striped" else (1.3, 2.0)
    scale = 0.7 if style == "mosaic" else 1.0
    return _uniform(rng, low, high) * scale


# Background colours per style: (saturation range, value range); any hue.
BACKGROUNDS = {"sketch": ((0.0, 0.08), (0.88, 1.0)), "neon": ((0.0, 0.5), (0.03, 0.15)),
               "photo": ((0.05, 0.3), (0.3, 0.85)), "mosaic": ((0.05, 0.3), (0.3, 0.85))}


def _background(rng, style):
    saturation, value = BACKGROUNDS[style]

    def paper():
        return hsv_to_rgb(_uniform(rng, 0, 360), _uniform(rng, *saturation), _uniform(rng, *value))

    return (paper(), paper()), _uniform(rng, 0, 360)


def _clutter(rng, style, nuisance):
    strokes = []
    for _ in range(int(rng.integers(0, nuisance["max_clutter"] + 1))):
        if style == "sketch":
            rgb = hsv_to_rgb(0, 0, _uniform(rng, 0.35, 0.65))
        elif style == "neon":
            rgb = hsv_to_rgb(_uniform(rng, 0, 360), _uniform(rng, 0.2, 0.6), _uniform(rng, 0.15, 0.35))
        else:
            rgb = hsv_to_rgb(_uniform(rng, 0, 360), _uniform(rng, 0.2, 0.9), _uniform(rng, 0.3, 0.9))
        x0, y0 = _uniform(rng, 0, 1), _uniform(rng, 0, 1)
        if rng.random() < 0.6:
            length, angle = _uniform(rng, 0.1, 0.4), _uniform(rng, 0, 2 * math.pi)
            strokes.append(Stroke(rgb, x0, y0, x0 + length * math.cos(angle), y0 + length * math.sin(angle),
                                  _uniform(rng, 0.008, 0.025)))
        else:
            strokes.append(Stroke(rgb, x0, y0, width=_uniform(rng, 0.01, 0.03)))
    return strokes


def _thing(rng, shape, colour, pattern, style, radius, cx, cy, rgb=None):
    return Thing(
        shape=shape, colour=colour, pattern=pattern, rgb=rgb or jittered_rgb(rng, colour), cx=cx, cy=cy,
        radius=radius, rotation=_uniform(rng, -MAX_TILT, MAX_TILT), frequency=_pattern_frequency(rng, pattern, style),
        phase=(_uniform(rng, 0, 1), _uniform(rng, 0, 1)), light_angle=_uniform(rng, 0, 360),
        light_strength=_uniform(rng, 0.0, 0.25) if style == "photo" else 0.0,
    )


def _place(rng, count, radius_range, tries=200):
    """Centres and radii of ``count`` discs inside the image that do not overlap."""
    placed = []
    for _ in range(tries):
        if len(placed) == count:
            break
        r = _uniform(rng, *radius_range)
        cx, cy = _uniform(rng, r, 1 - r), _uniform(rng, r, 1 - r)
        if all(math.hypot(cx - x, cy - y) > r + s + 0.02 for x, y, s in placed):
            placed.append((cx, cy, r))
    if len(placed) < count:
        return _place(rng, count, (radius_range[0], radius_range[0]), tries)
    return placed


def sample_scene(rng, kind, shape=None, colour=None, pattern=None, count=1, style="photo", nuisance=NUISANCE):
    """A scene of ``kind`` with the given attributes (``shape`` is None for textures)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}; got {style!r}")
    background, angle = _background(rng, style)
    clutter = _clutter(rng, style, nuisance) if kind != "texture" else []
    if kind == "object":
        r = _uniform(rng, 0.2, 0.4)
        things = [_thing(rng, shape, colour, pattern, style, r, _uniform(rng, r * 0.9, 1 - r * 0.9),
                         _uniform(rng, r * 0.9, 1 - r * 0.9))]
    elif kind == "count":
        rgb = jittered_rgb(rng, colour)
        things = [_thing(rng, shape, colour, pattern, style, r, cx, cy, rgb)
                  for cx, cy, r in _place(rng, count, (0.1, 0.14))]
    else:
        things = [_thing(rng, "texture", colour, pattern, style, 0.25, _uniform(rng, 0, 1), _uniform(rng, 0, 1))]
    max_noise = nuisance["max_noise"] * (0.4 if style != "photo" else 1.0)
    return Scene(kind=kind, style=style, things=things, background=background, background_angle=angle,
                 clutter=clutter, noise=_uniform(rng, 0, max_noise), noise_seed=int(rng.integers(0, 2**31 - 1)))


# ----- attributes and captions -----
ATTRIBUTE_KEYS = ("shape", "colour", "pattern", "count", "style")


def attributes_of(scene):
    """The scene's attributes recomputed from what is drawn: shape (None for a texture), colour, pattern,
    count (number of objects; 0 for a texture) and style."""
    first = scene.things[0]
    if any((t.shape, t.colour, t.pattern) != (first.shape, first.colour, first.pattern) for t in scene.things):
        raise ValueError("a scene's objects must share their attributes")
    texture = first.shape == "texture"
    return {"shape": None if texture else first.shape, "colour": first.colour, "pattern": first.pattern,
            "count": 0 if texture else len(scene.things), "style": scene.style}


def consistent(stated, attributes):
    """Whether a caption stating ``stated`` (a subset of the attribute keys) is true of ``attributes``."""
    return all(attributes[key] == value for key, value in stated.items())


def _pick(rng, options):
    return options[int(rng.integers(0, len(options)))]


def describe(rng, scene, keep_colour=0.85, keep_pattern=0.7, mention_style=0.6):
    """``(caption, stated)``: a sentence about the scene and the attributes it states.

    Attribute words are sometimes left out, as real captions leave things out; the shape of an object and the
    number of objects are always said."""
    attrs = attributes_of(scene)
    colour = attrs["colour"] if rng.random() < keep_colour else None
    pattern = attrs["pattern"] if rng.random() < keep_pattern else None
    style_words = rng.random() < (mention_style if scene.style == "photo" else 0.8)
    prefix = _pick(rng, STYLE_PHRASES[scene.style]) + " " if style_words else ""
    stated = {"count": attrs["count"]}
    if style_words and scene.style != "photo":
        stated["style"] = scene.style
    if attrs["count"] == 0:  # a texture
        colour = attrs["colour"]  # a texture's colour is always said: it is most of what there is to say
        noun = PATTERNS[attrs["pattern"]][2]
        forms = [f"a {colour} {pattern} texture" if pattern else f"a {colour} texture",
                 f"a {pattern} {colour} pattern" if pattern else f"a {colour} surface",
                 f"{colour} {noun}" if pattern and pattern != "plain" else f"a plain {colour} texture"]
        if pattern is None:
            forms = forms[:2]
        elif pattern == "plain":
            forms = [f"a plain {colour} texture", f"a plain {colour} surface"]
        text = _pick(rng, forms)
        stated.update(colour=colour, **({"pattern": pattern} if pattern else {}))
        return f"{prefix}{text}.", stated
    shape = attrs["shape"]
    stated["shape"] = shape
    if colour:
        stated["colour"] = colour
    if pattern:
        stated["pattern"] = pattern
    if attrs["count"] > 1 or scene.kind == "count" and rng.random() < 0.5:
        text = count_name(attrs["count"], shape, colour, pattern)
        return f"{prefix}{text}.", stated
    radius = scene.things[0].radius
    size = ""
    if rng.random() < 0.3 and (radius < SMALL_RADIUS or radius > LARGE_RADIUS):
        size = "small " if radius < SMALL_RADIUS else "large "
    if pattern and pattern != "plain" and rng.random() < 0.35:
        desc = f"{size}{object_name(shape, colour)} with {PATTERNS[pattern][1]}"
    else:
        desc = size + object_name(shape, colour, pattern)
    return f"{prefix}a {desc}.", stated


def attribute_codes(attributes):
    """Integer codes of an attribute dict (-1 where unstated), for batched consistency checks."""
    tables = {"shape": (None,) + SHAPES, "colour": tuple(COLOURS), "pattern": tuple(PATTERNS),
              "count": (0,) + tuple(COUNTS), "style": STYLES}
    return np.array([tables[key].index(attributes[key]) if key in attributes else -1 for key in ATTRIBUTE_KEYS])


def consistency_matrix(caption_codes, image_codes):
    """``[captions, images]`` bool: caption i is a true description of image j."""
    captions = np.asarray(caption_codes)[:, None, :]
    images = np.asarray(image_codes)[None, :, :]
    return np.all((captions == -1) | (captions == images), axis=-1)
