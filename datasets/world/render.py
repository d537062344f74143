"""Drawing a scene: a pure function from a ``Scene`` (plain numbers and words) to an RGB image.

Everything random about an image is decided when the scene is sampled (``scenes.py``); rendering only reads the
scene, so the same scene always gives the same pixels and the tests can re-render an image from the parameters
stored beside it. Shapes and patterns are drawn at ``SUPERSAMPLE`` times the image size and averaged down, which
gives anti-aliased edges without any dependency beyond numpy and Pillow.
"""
import colorsys
import math
from dataclasses import asdict, dataclass, field
from typing import List, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SUPERSAMPLE = 4


@dataclass
class Thing:
    """One drawn object (or, with shape ``"texture"``, a pattern filling the whole image).

    Positions and radius are fractions of the image width; ``rgb`` is the jittered colour (0-255);
    ``frequency`` is the number of pattern periods per radius; ``rotation`` is in degrees."""

    shape: str
    colour: str
    pattern: str
    rgb: Tuple[float, float, float]
    cx: float = 0.5
    cy: float = 0.5
    radius: float = 0.3
    rotation: float = 0.0
    frequency: float = 2.0
    phase: Tuple[float, float] = (0.0, 0.0)
    light_angle: float = 0.0
    light_strength: float = 0.0


@dataclass
class Stroke:
    """A clutter element: a line segment (``x1, y1`` set) or a speck (a small disc at ``x0, y0``)."""

    rgb: Tuple[float, float, float]
    x0: float
    y0: float
    x1: float = None
    y1: float = None
    width: float = 0.02


@dataclass
class Scene:
    kind: str  # "object", "count" or "texture"
    style: str  # one of attributes.STYLES
    things: List[Thing]
    background: Tuple[Tuple[float, float, float], Tuple[float, float, float]]
    background_angle: float = 0.0
    clutter: List[Stroke] = field(default_factory=list)
    noise: float = 0.0  # standard deviation of the pixel noise, on the 0-255 scale
    noise_seed: int = 0
    white_balance: Tuple[float, float, float] = (1.0, 1.0, 1.0)  # gains of the camera's R, G, B channels

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        data = dict(data)
        data["things"] = [Thing(**{**t, "rgb": tuple(t["rgb"]), "phase": tuple(t["phase"])}) for t in data["things"]]
        data["clutter"] = [Stroke(**{**s, "rgb": tuple(s["rgb"])}) for s in data["clutter"]]
        data["background"] = tuple(tuple(c) for c in data["background"])
        data["white_balance"] = tuple(data.get("white_balance", (1.0, 1.0, 1.0)))
        return cls(**data)


def hsv_to_rgb(hue, saturation, value):
    return tuple(255.0 * c for c in colorsys.hsv_to_rgb((hue % 360.0) / 360.0, saturation, value))


# ----- shapes: polygons in object coordinates (radius 1, y down), each layer drawn with fill 1 or 0 -----
def _regular(n, radius=1.0, start=-90.0):
    angles = [math.radians(start + 360.0 * k / n) for k in range(n)]
    return [(radius * math.cos(a), radius * math.sin(a)) for a in angles]


def _star(points=5, inner=0.42):
    outer = _regular(points)
    inner_points = _regular(points, inner, start=-90.0 + 180.0 / points)
    return [p for pair in zip(outer, inner_points) for p in pair]


def _heart(n=60):
    path = []
    for k in range(n):
        t = 2 * math.pi * k / n
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        path.append((x / 16.5, -(y + 2.5) / 16.5))
    return path


SHAPE_LAYERS = {
    "circle": [(_regular(64), 1)],
    "square": [([(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)], 1)],
    "triangle": [(_regular(3, 1.05, start=-90.0), 1)],
    "star": [(_star(), 1)],
    "cross": [([(-0.3, -0.95), (0.3, -0.95), (0.3, -0.3), (0.95, -0.3), (0.95, 0.3), (0.3, 0.3), (0.3, 0.95),
                (-0.3, 0.95), (-0.3, 0.3), (-0.95, 0.3), (-0.95, -0.3), (-0.3, -0.3)], 1)],
    "heart": [(_heart(), 1)],
    "hexagon": [(_regular(6, 0.95, start=0.0), 1)],
    "crescent": [(_regular(64), 1), ([(x + 0.45, y - 0.1) for x, y in _regular(64, 0.82)], 0)],
    "diamond": [([(0.0, -1.0), (0.62, 0.0), (0.0, 1.0), (-0.62, 0.0)], 1)],
    "arrow": [([(-0.95, -0.22), (0.15, -0.22), (0.15, -0.6), (0.95, 0.0), (0.15, 0.6), (0.15, 0.22),
                (-0.95, 0.22)], 1)],
}


def _polygons(thing, n):
    """The thing's polygon layers in canvas pixels (``n`` pixels wide)."""
    angle = math.radians(thing.rotation)
    cos, sin = math.cos(angle), math.sin(angle)
    r = thing.radius * n
    return [([((thing.cx * n) + r * (x * cos - y * sin), (thing.cy * n) + r * (x * sin + y * cos)) for x, y in points],
             fill) for points, fill in SHAPE_LAYERS[thing.shape]]


def _box(thing, n, pad=0):
    """The thing's bounding box on the supersampled canvas, on whole output pixels: ``(x0, y0, x1, y1)``."""
    if thing.shape == "texture":
        return 0, 0, n, n
    points = [p for poly, _ in _polygons(thing, n) for p in poly]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    snap = SUPERSAMPLE

    def low(value):
        return max(0, int(math.floor((value - pad) / snap)) * snap)

    def high(value):
        return min(n, int(math.ceil((value + pad + 1) / snap)) * snap)

    return low(min(xs)), low(min(ys)), high(max(xs)), high(max(ys))


def _check(thing):
    if thing.shape != "texture" and thing.shape not in SHAPE_LAYERS:
        raise ValueError(f"unknown shape {thing.shape!r}; known: {', '.join(SHAPE_LAYERS)}")


def shape_mask(thing, n, box=None):
    """Mask (0/1 floats) of the thing on the ``box`` of a canvas of ``n`` pixels (default: the whole canvas)."""
    _check(thing)
    x0, y0, x1, y1 = box or (0, 0, n, n)
    if thing.shape == "texture":
        return np.ones((y1 - y0, x1 - x0), dtype=np.float32)
    image = Image.new("L", (x1 - x0, y1 - y0), 0)
    draw = ImageDraw.Draw(image)
    for points, fill in _polygons(thing, n):
        draw.polygon([(x - x0, y - y0) for x, y in points], fill=255 * fill)
    return np.asarray(image, dtype=np.float32) / 255.0


def object_mask(thing, size):
    """The thing's coverage of each pixel of a ``size`` image (anti-aliased, in [0, 1])."""
    return downsample(shape_mask(thing, size * SUPERSAMPLE)[..., None], SUPERSAMPLE)[..., 0]


def local_coordinates(thing, n, box=None):
    """Pixel centres of the ``box`` in the thing's own frame (units of its radius, rotated with it)."""
    x0, y0, x1, y1 = box or (0, 0, n, n)
    xs = (np.arange(x0, x1, dtype=np.float32) + 0.5) / n - thing.cx
    ys = (np.arange(y0, y1, dtype=np.float32) + 0.5) / n - thing.cy
    x, y = np.meshgrid(xs, ys)
    angle = math.radians(thing.rotation)
    u = (x * math.cos(angle) + y * math.sin(angle)) / thing.radius
    v = (-x * math.sin(angle) + y * math.cos(angle)) / thing.radius
    return u, v


def pattern_mask(thing, n, line=None, box=None, coords=None):
    """Where the pattern's second tone goes (1) on the ``box``. With ``line`` (a fraction of the period) the
    pattern is drawn as thin lines / small dots instead of filled areas (the line-art styles)."""
    x0, y0, x1, y1 = box or (0, 0, n, n)
    if thing.pattern == "plain":
        return np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
    u, v = coords if coords is not None else local_coordinates(thing, n, box)
    fu = np.mod(u * thing.frequency + thing.phase[0], 1.0)
    fv = np.mod(v * thing.frequency + thing.phase[1], 1.0)
    if thing.pattern == "striped":
        mask = fu < (line or 0.5)
    elif thing.pattern == "dotted":
        mask = np.hypot(fu - 0.5, fv - 0.5) < (line * 1.2 if line else 0.28)
    elif thing.pattern == "checkered":
        if line:
            mask = (fu < line) | (fv < line)
        else:
            cells = np.floor(u * thing.frequency + thing.phase[0]) + np.floor(v * thing.frequency + thing.phase[1])
            mask = np.mod(cells, 2) == 1
    else:
        raise ValueError(f"unknown pattern {thing.pattern!r}")
    return mask.astype(np.float32)


def downsample(canvas, factor):
    """Mean over ``factor x factor`` blocks (strided sums: several times faster than a reshaped mean)."""
    rows = sum(canvas[i::factor] for i in range(factor))
    return sum(rows[:, i::factor] for i in range(factor)) / float(factor * factor)


def _gradient(background, angle, size):
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    x, y = np.meshgrid(coords, coords)
    t = np.clip(0.5 + x * math.cos(math.radians(angle)) + y * math.sin(math.radians(angle)), 0.0, 1.0)[..., None]
    first, second = (np.asarray(c, dtype=np.float32) for c in background)
    return first * (1 - t) + second * t


def _composite(image, box, coverage, premultiplied):
    """Lay a layer (coverage and colour x coverage, at output resolution) over ``image`` at the box."""
    x0, y0, x1, y1 = (v // SUPERSAMPLE for v in box)
    region = image[y0:y1, x0:x1]
    image[y0:y1, x0:x1] = region * (1 - coverage[..., None]) + premultiplied


def _draw_clutter(image, clutter, n):
    if not clutter:
        return image
    layer = Image.new("RGBA", (n, n), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for stroke in clutter:
        fill = tuple(int(round(c)) for c in stroke.rgb) + (255,)
        if stroke.x1 is None:
            r = stroke.width * n
            draw.ellipse([stroke.x0 * n - r, stroke.y0 * n - r, stroke.x0 * n + r, stroke.y0 * n + r], fill=fill)
        else:
            width = max(1, int(round(stroke.width * n)))
            draw.line([stroke.x0 * n, stroke.y0 * n, stroke.x1 * n, stroke.y1 * n], fill=fill, width=width)
    # Transparent pixels are black, so averaging the colour channels gives colour x coverage directly.
    small = downsample(np.asarray(layer, dtype=np.float32), SUPERSAMPLE)
    _composite(image, (0, 0, n, n), small[..., 3] / 255.0, small[..., :3])
    return image


def _filled_thing(image, thing, n):
    box = _box(thing, n)
    mask = shape_mask(thing, n, box)
    u, v = local_coordinates(thing, n, box)
    tone = 1.0 - 0.65 * pattern_mask(thing, n, box=box, coords=(u, v))  # the second tone: same hue, darker
    angle = math.radians(thing.light_angle - thing.rotation)  # the light is fixed in the image, not the object
    light = 1.0 + thing.light_strength * np.clip(u * math.cos(angle) + v * math.sin(angle), -1.2, 1.2)
    colour = (tone * light * mask)[..., None] * np.asarray(thing.rgb, dtype=np.float32)
    _composite(image, box, downsample(mask[..., None], SUPERSAMPLE)[..., 0], downsample(colour, SUPERSAMPLE))


def _erode(mask, width):
    """Minimum over a ``width x width`` square (separable), zeros outside the array."""
    r = width // 2
    padded = np.pad(mask, r)
    windows = np.lib.stride_tricks.sliding_window_view
    return windows(windows(padded, width, axis=0).min(-1), width, axis=1).min(-1)


def _line_art(thing, n, stroke):
    """``(box, line coverage at output resolution)``: the outline plus the pattern drawn as lines."""
    width = max(3, 2 * int(round(stroke * n)) + 1)
    box = _box(thing, n, pad=width)
    mask = shape_mask(thing, n, box)
    inner = _erode(mask, width)
    lines = np.maximum(mask - inner, pattern_mask(thing, n, line=0.16, box=box) * mask)
    return box, downsample(lines[..., None], SUPERSAMPLE)[..., 0]


def render(scene, size=48):
    """The scene as a ``[size, size, 3]`` uint8 array."""
    n = size * SUPERSAMPLE
    image = _gradient(scene.background, scene.background_angle, size)
    image = _draw_clutter(image, scene.clutter, n)
    if scene.style in ("photo", "mosaic"):
        for thing in scene.things:
            _filled_thing(image, thing, n)
        if scene.style == "mosaic":
            block = 2
            small = np.round(downsample(image, block) / 64.0) * 64.0  # a 5-level palette per channel
            image = np.repeat(np.repeat(small, block, axis=0), block, axis=1)
    elif scene.style in ("sketch", "neon"):
        layers = [(_line_art(thing, n, stroke=0.025), np.asarray(thing.rgb, dtype=np.float32))
                  for thing in scene.things]
        if scene.style == "neon":
            glow = np.zeros_like(image)
            for ((x0, y0, x1, y1), lines), rgb in layers:
                s = SUPERSAMPLE
                region = glow[y0 // s:y1 // s, x0 // s:x1 // s]
                np.maximum(region, lines[..., None] * rgb, out=region)
            blurred = np.asarray(Image.fromarray(np.clip(glow, 0, 255).astype(np.uint8)).filter(
                ImageFilter.GaussianBlur(radius=2.0)), dtype=np.float32)
            image = image + 1.6 * blurred
            layers = [(layer, 0.6 * rgb + 0.4 * 255.0) for layer, rgb in layers]
        for (box, lines), rgb in layers:
            _composite(image, box, lines, lines[..., None] * rgb)
    else:
        raise ValueError(f"unknown style {scene.style!r}")
    if tuple(scene.white_balance) != (1.0, 1.0, 1.0):
        image = image * np.asarray(scene.white_balance, dtype=np.float32)
    if scene.noise > 0:
        image = image + np.random.default_rng(scene.noise_seed).normal(0.0, scene.noise, image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)
