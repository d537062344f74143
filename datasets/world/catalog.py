"""The datasets drawn from the world, and writing them to disk in CoOp's layout (image folders + split JSON).

Every image is rendered from its own random generator, seeded by (world seed, dataset, split, class, index), so a
dataset is the same bytes whoever generates it, in any order. ``ensure_dataset`` generates a missing dataset into a
temporary folder and renames it into place, so a crash never leaves half a dataset and two processes that
generate it at the same time both end up reading one complete copy.
"""
import itertools
import json
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .attributes import COLOURS, COUNTS, PATTERNS, SHAPES, STYLE_PHRASES, count_name, object_name, texture_name
from .render import render
from .scenes import attributes_of, describe, sample_scene

# Bump when rendering, sampling or the catalog changes: a dataset on disk made by another version is refused.
GENERATOR_VERSION = 3
# The seed of the world's classes (which compositions a dataset has, which are new) and the default image seed.
# Another image seed renders the same classes with other images (other few-shot samples, other test images):
# it measures how much a result depends on the draw of the images.
WORLD_SEED = 0
IMAGE_SIZE = 48
SPLIT_FILE = "split_world.json"
MANIFEST_FILE = "world.json"
ANNOTATIONS_FILE = "annotations.json"
IMAGE_DIR = "images"
SPLITS = ("train", "val", "test")


class WorldDataError(RuntimeError):
    """A world dataset folder that is not what this generator would write; the message says what to do."""


@dataclass(frozen=True)
class WorldSpec:
    name: str  # folder under $DATA and configs/datasets/<name>.yaml
    kind: str  # "object", "count" or "texture"
    style: str
    classes: tuple  # one dict of fixed attributes per class, in label order
    per_split: tuple  # images per class in train, val, test
    template: str
    test_only: bool = False
    lighting: str = "neutral"  # "warm" or "cool": a colour cast that pretraining never shows (see LIGHTS)

    def classname(self, label):
        attrs = self.classes[label]
        if self.kind == "texture":
            return texture_name(attrs["colour"], attrs["pattern"])
        if self.kind == "count":
            return count_name(attrs["count"], attrs["shape"], attrs.get("colour"), attrs.get("pattern"))
        return object_name(attrs["shape"], attrs.get("colour"), attrs.get("pattern"))

    @property
    def classnames(self):
        return [self.classname(label) for label in range(len(self.classes))]

    @property
    def ensemble(self):
        """The phrasings of this dataset's kind of caption that the world CLIP was pretrained on (its own
        template ensemble): each of the style's phrases, and the bare name."""
        article = "" if self.kind == "count" else "a "
        noun = "{} texture" if self.kind == "texture" else "{}"
        phrases = STYLE_PHRASES["photo" if self.kind == "texture" else self.style]
        forms = [f"{phrase} {article}{noun}." for phrase in phrases] + [f"{article}{noun}."]
        return tuple(dict.fromkeys([self.template, *forms]))


# Some datasets' photos are taken under coloured light: warm (red up, blue down) or cool (blue up, red down),
# channel gains jittered per image by up to LIGHT_JITTER. Pretraining never shows these casts, so zero-shot CLIP
# loses accuracy to them and prompts learned from a few shots can win some back, as on the real benchmarks'
# datasets, whose photos are not the web's average photo either.
LIGHTS = {"neutral": None, "warm": (1.12, 0.96, 0.72), "cool": (0.8, 0.97, 1.16)}
LIGHT_JITTER = 0.03


def seeded_rng(*keys):
    """A generator seeded by integers and strings (strings through CRC-32, stable across runs and machines)."""
    entropy = [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(entropy))


# The words each half of a base-to-new dataset names its classes with: the new half's names never use a word of the
# base half's names, as the new classes of the real benchmarks bring objects, species and scenes of their own. The base
# half has the words zero-shot CLIP reads less well (colours that light casts confuse, shapes of finer outline), as the
# real benchmarks' base halves are their harder half for zero-shot CLIP (69.3 base, 74.2 new on the 11-dataset average).
BASE_WORDS = {"colour": ("blue", "purple", "pink", "brown"), "shape": ("heart", "hexagon", "crescent", "diamond", "arrow"),
              "pattern": ("dotted", "checkered")}
NEW_WORDS = {"colour": ("red", "orange", "yellow", "green"), "shape": ("circle", "square", "triangle", "star", "cross"),
             "pattern": ("plain", "striped")}


def object_universe(words=None):
    """Every (pattern, colour, shape) combination (of ``words``' values, default all), in a fixed order."""
    words = words or {"pattern": tuple(PATTERNS), "colour": tuple(COLOURS), "shape": SHAPES}
    return [dict(pattern=p, colour=c, shape=s)
            for p, c, s in itertools.product(words["pattern"], words["colour"], words["shape"])]


def world_classes(seed=WORLD_SEED, count=40):
    """The base-to-new dataset's classes: ``count // 2`` combinations of the base words, then as many of the new
    words, each half drawn at random (labels in the drawn order)."""
    half = count // 2
    classes = []
    for part, words in (("base", BASE_WORDS), ("new", NEW_WORDS)):
        universe = object_universe(words)
        order = seeded_rng(seed, "world-classes", part).permutation(len(universe))[:half]
        classes += [universe[i] for i in order]
    return tuple(classes)


# The kinds of pretraining scene that show a class of a dataset of each kind (a count scene shows objects too).
SHOWN_BY = {"object": ("object", "count"), "count": ("count",), "texture": ("texture",)}


def pretraining_holdouts(catalog):
    """``[(kinds, style, attributes)]``: the base classes of the suite's datasets, as the pretraining scenes that
    would show them (of those kinds, in the dataset's style, with the attributes the class fixes). Pretraining never
    shows them: the base classes are compositions of known words that the captions never tied to their images, as the
    real benchmarks' base classes are fine-grained things the web seldom captions, so zero-shot CLIP reads them less
    well than the images allow and a context learned on them has something to gain. A class that fixes a shape alone
    (``world_shapes``) hides nothing: hiding it would hide the word."""
    holdouts = []
    for name in SUITE:
        spec = catalog[name]
        for attrs in spec.classes[:(len(spec.classes) + 1) // 2]:
            if set(attrs) != {"shape"}:
                holdouts.append((SHOWN_BY[spec.kind], spec.style, tuple(sorted(attrs.items()))))
    return holdouts


def held_out(holdouts, kind, style, attributes):
    """Whether a pretraining scene of ``kind`` and ``style`` with ``attributes`` shows a held-out class."""
    return any(kind in kinds and style == held_style and all(attributes.get(k) == v for k, v in fixed)
               for kinds, held_style, fixed in holdouts)


def halves(make, seed, key):
    """Classes of a dataset whose halves name themselves with their own words: ``make(words)`` lists the classes
    that ``words`` can name; each half is shuffled by the seed (labels: base half first)."""
    classes = []
    for part, words in (("base", BASE_WORDS), ("new", NEW_WORDS)):
        made = make(words)
        classes += [made[i] for i in seeded_rng(seed, key, part).permutation(len(made))]
    return tuple(classes)


# Images per class (train, val, test) of the suite's base-to-new datasets: at least 16 shots to draw from, and
# 100 test images per class: 500 to 2,000 per half of a dataset, a binomial standard error of 1 to 2.2 points.
SUITE_SPLIT = (24, 8, 100)


def build_catalog(seed=WORLD_SEED):
    world = world_classes(seed)
    specs = [
        # The suite of base-to-new datasets (SUITE), each of another character; the last four are also the
        # cross-dataset targets of a model trained on "world". In each, the new half's class names use no word of
        # the base half's (BASE_WORDS / NEW_WORDS), except the count words of world_counts.
        # Compositions (pattern x colour x shape) under warm light.
        WorldSpec("world", "object", "photo", world, (32, 8, 100), "a photo of a {}.", lighting="warm"),
        # Coarse classes (shape only; colour and pattern vary within a class), as neon signs: a style that a twelfth
        # of the pretraining images have, and the one where a context learned on five shapes loses the other five.
        WorldSpec("world_shapes", "object", "neon",
                  halves(lambda w: [dict(shape=s) for s in w["shape"]], seed, "shape-classes"), SUITE_SPLIT,
                  "a neon sign of a {}."),
        # Textures filling the image (colour x pattern) under cool light.
        WorldSpec("world_textures", "texture", "photo",
                  halves(lambda w: [dict(colour=c, pattern=p) for c, p in itertools.product(w["colour"], w["pattern"])],
                         seed, "texture-classes"), SUITE_SPLIT, "a photo of a {} texture.", lighting="cool"),
        # Counting (count x colour, one shape per half: hearts in the base half, circles in the new one) under cool
        # light: how many is what CLIP reads least well, as fine-grained distinctions are for CLIP. Both halves count
        # from one to four.
        WorldSpec("world_counts", "count", "photo",
                  halves(lambda w: [dict(count=n, colour=c, shape=w["shape"][0])
                                    for n, c in itertools.product(COUNTS, w["colour"])], seed, "count-classes"),
                  SUITE_SPLIT, "a photo of {}.", lighting="cool"),
        # Neon signs of coloured shapes (colour x shape).
        WorldSpec("world_signs", "object", "neon",
                  halves(lambda w: [dict(colour=c, shape=s) for c, s in itertools.product(w["colour"], w["shape"])],
                         seed, "sign-classes"), SUITE_SPLIT, "a neon sign of a {}."),
    ]
    # Domain generalisation: the classes of "world" in other renderings (test only, like ImageNet's variants).
    for style in ("sketch", "mosaic", "neon"):
        specs.append(WorldSpec(f"world_{style}", "object", style, world, (0, 0, 30), "a photo of a {}.", True))
    return {spec.name: spec for spec in specs}


CATALOG = build_catalog()
# The embedded benchmark suite: the base-to-new datasets averaged like the 11 datasets of the real benchmark.
SUITE = ("world", "world_shapes", "world_textures", "world_counts", "world_signs")


def get_spec(name):
    if name not in CATALOG:
        raise KeyError(f"unknown world dataset {name!r}; known: {', '.join(CATALOG)}")
    return CATALOG[name]


def sample_class_scene(rng, spec, label):
    """A scene of class ``label``: the class's attributes fixed, the others (and every nuisance) random."""
    attrs = dict(spec.classes[label])
    if spec.kind == "texture":
        scene = sample_scene(rng, "texture", None, attrs["colour"], attrs["pattern"], style=spec.style)
    else:
        colour = attrs.get("colour") or list(COLOURS)[int(rng.integers(0, len(COLOURS)))]
        pattern = attrs.get("pattern") or list(PATTERNS)[int(rng.integers(0, len(PATTERNS)))]
        scene = sample_scene(rng, spec.kind, attrs["shape"], colour, pattern, count=attrs.get("count", 1),
                             style=spec.style)
    if spec.lighting not in LIGHTS:
        raise ValueError(f"lighting must be one of {', '.join(LIGHTS)}; got {spec.lighting!r}")
    gains = LIGHTS[spec.lighting]
    if gains is not None:
        scene.white_balance = tuple(g + float(rng.uniform(-LIGHT_JITTER, LIGHT_JITTER)) for g in gains)
    return scene


def class_folder(classname):
    return classname.replace(" ", "_")


def dataset_items(spec, seed=WORLD_SEED, splits=SPLITS, per_class=None):
    """``(split, relative path, label, class name, scene, caption)`` for every image of the dataset, in order.
    ``per_class`` caps the images per class and split (a fixed subset: the first ones)."""
    for split, count in zip(SPLITS, spec.per_split):
        if split not in splits:
            continue
        for label in range(len(spec.classes)):
            name = spec.classname(label)
            for index in range(count if per_class is None else min(count, per_class)):
                rng = seeded_rng(seed, spec.name, split, label, index)
                scene = sample_class_scene(rng, spec, label)
                caption, _ = describe(rng, scene)
                relative = f"{class_folder(name)}/{split}_{index:03d}.png"
                yield split, relative, label, name, scene, caption


def manifest(spec, seed):
    return {"generator_version": GENERATOR_VERSION, "seed": seed, "dataset": spec.name, "kind": spec.kind,
            "style": spec.style, "image_size": IMAGE_SIZE, "classnames": spec.classnames,
            "template": spec.template, "per_split": list(spec.per_split), "lighting": spec.lighting}


def write_dataset(folder, spec, seed=WORLD_SEED):
    """Render every image of ``spec`` into ``folder`` (which must not exist yet) with its split file."""
    os.makedirs(os.path.join(folder, IMAGE_DIR))
    split = {name: [] for name in SPLITS}
    annotations = {}
    for split_name, relative, label, name, scene, caption in dataset_items(spec, seed):
        path = os.path.join(folder, IMAGE_DIR, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(render(scene, IMAGE_SIZE)).save(path, format="PNG", optimize=False, compress_level=6)
        split[split_name].append([relative, label, name])
        annotations[relative] = {"caption": caption, "attributes": attributes_of(scene), "scene": scene.to_dict()}
    for filename, content in ((SPLIT_FILE, split), (ANNOTATIONS_FILE, annotations)):
        with open(os.path.join(folder, filename), "w") as handle:
            json.dump(content, handle)
    # Written last: a folder with a manifest is complete.
    with open(os.path.join(folder, MANIFEST_FILE), "w") as handle:
        json.dump(manifest(spec, seed), handle, indent=2)


def read_manifest(folder):
    path = os.path.join(folder, MANIFEST_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def check_dataset(folder, spec, seed=WORLD_SEED):
    found = read_manifest(folder)
    if found is None:
        raise WorldDataError(
            f"{folder} exists but is not a generated world dataset (no {MANIFEST_FILE}). Move it away or delete "
            f"it: it is generated again on first use.")
    expected = manifest(spec, seed)
    if found != expected:
        differs = sorted(key for key in expected if found.get(key) != expected[key])
        raise WorldDataError(
            f"{folder} was generated with other settings ({', '.join(differs)} differ, e.g. generator version "
            f"{found.get('generator_version')} vs {GENERATOR_VERSION}). Delete it: it is generated again on first use.")


def folder_name(name, seed=WORLD_SEED):
    """The folder (under the data root) of dataset ``name`` rendered with image seed ``seed``: the dataset's
    name for the default seed, so that datasets of several image seeds can live side by side."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"a world image seed must be a non-negative integer; got {seed!r}")
    return name if seed == WORLD_SEED else f"{name}_imageseed{seed}"


def ensure_dataset(root, name, seed=WORLD_SEED, log=print):
    """The folder of dataset ``name`` rendered with image seed ``seed`` under ``root``, generated there first if
    it is missing."""
    spec = get_spec(name)
    folder = os.path.join(root, folder_name(spec.name, seed))
    if os.path.islink(folder) and not os.path.exists(folder):  # checked before anything is generated
        raise WorldDataError(
            f"{folder} is a symbolic link to {os.readlink(folder)}, which does not exist or leads back to itself (a "
            "loop): remove the link (the dataset is generated again on first use) or point it at a generated copy.")
    if not os.path.exists(folder):
        try:
            os.makedirs(root, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix=f".{spec.name}.tmp-", dir=root)
        except OSError as err:
            raise WorldDataError(
                f"Cannot generate the embedded dataset {spec.name} in {root}: {err.strerror}. It is written there on "
                "first use: give a DATA (--root) you can write to, or generate it once where DATA is writable."
            ) from None
        log(f"Generating the embedded dataset {spec.name} (image seed {seed}) in {folder} (first use; "
            f"{len(spec.classes)} classes)")
        try:
            write_dataset(os.path.join(tmp, "data"), spec, seed)
            try:
                os.rename(os.path.join(tmp, "data"), folder)
            except OSError:
                if read_manifest(folder) is None:  # not a concurrent generator that finished first
                    raise
                log(f"{folder} was generated by another process meanwhile; using that copy")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    check_dataset(folder, spec, seed)
    return folder
