"""The words of the world: the attributes an object has and how they are said.

Every attribute value here is a word (or two) that CLIP's BPE vocabulary knows, so class names and captions are
ordinary English that prompt learners can use unchanged.
"""

# Prototype colours in HSV (hue in degrees, saturation and value in [0, 1]); renderings jitter around them.
COLOURS = {
    "red": (0.0, 0.85, 0.9),
    "orange": (28.0, 0.9, 1.0),
    "yellow": (55.0, 0.9, 1.0),
    "green": (125.0, 0.75, 0.75),
    "blue": (220.0, 0.8, 0.9),
    "purple": (280.0, 0.65, 0.75),
    "pink": (330.0, 0.45, 1.0),
    "brown": (25.0, 0.75, 0.5),
}

SHAPES = ("circle", "square", "triangle", "star", "cross", "heart", "hexagon", "crescent", "diamond", "arrow")

PLURALS = {shape: shape + ("es" if shape.endswith(("s", "x", "ch", "sh")) else "s") for shape in SHAPES}

# Pattern name -> (adjective used in names, noun phrase used in "with ..." captions, texture noun).
PATTERNS = {
    "plain": ("plain", "no pattern", "plain"),
    "striped": ("striped", "stripes", "stripes"),
    "dotted": ("dotted", "dots", "dots"),
    "checkered": ("checkered", "checks", "checks"),
}

COUNTS = {1: "one", 2: "two", 3: "three", 4: "four"}

# Rendering styles: the default photo-like one and the renderings used for domain generalisation.
STYLES = ("photo", "sketch", "mosaic", "neon")
STYLE_PHRASES = {
    "photo": ("a photo of", "a picture of", "an image of"),
    "sketch": ("a sketch of", "a drawing of", "a pencil sketch of"),
    "mosaic": ("a pixel art image of", "a mosaic of", "a pixelated image of"),
    "neon": ("a neon sign of", "a glowing neon image of", "a neon picture of"),
}

# Object sizes named in captions: radius (fraction of the image width) below / above these bounds.
SMALL_RADIUS = 0.25
LARGE_RADIUS = 0.35


def object_name(shape, colour=None, pattern=None):
    """``"striped red circle"``: the words of the attributes that are given, in a fixed order."""
    words = [w for w in (pattern, colour) if w] + [shape]
    return " ".join(words)


def count_name(count, shape, colour=None, pattern=None):
    """``"three red circles"`` (singular for one)."""
    noun = shape if count == 1 else PLURALS[shape]
    return " ".join([COUNTS[count]] + [w for w in (pattern, colour) if w] + [noun])


def texture_name(colour, pattern):
    """``"red striped"`` (the class name of a texture; its template adds the word texture)."""
    return f"{colour} {pattern}"
