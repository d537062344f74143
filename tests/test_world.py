"""The procedural world: determinism, class names and captions that say what is drawn, safe generation on disk,
and the pretraining objective's pieces. No Dassl, no downloads."""
import dataclasses
import json
import multiprocessing
import os
import re

import numpy as np
import pytest

from datasets.world import catalog
from datasets.world.attributes import COLOURS, COUNTS, PATTERNS, PLURALS, SHAPES, STYLES
from datasets.world.render import SUPERSAMPLE, Scene, downsample, hsv_to_rgb, object_mask, pattern_mask, render
from datasets.world.scenes import (
    ATTRIBUTE_KEYS,
    attribute_codes,
    attributes_of,
    consistency_matrix,
    consistent,
    describe,
    sample_scene,
)


def small(name, per_split=(2, 1, 2)):
    """A catalog dataset with fewer images per class (same classes, same per-image seeds)."""
    spec = catalog.get_spec(name)
    return dataclasses.replace(spec, per_split=tuple(min(a, b) for a, b in zip(per_split, spec.per_split)))


def folder_bytes(folder):
    found = {}
    for directory, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, folder)] = handle.read()
    return found


# ----- determinism -----
def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    spec = small("world")
    catalog.write_dataset(str(tmp_path / "a"), spec, seed=0)
    catalog.write_dataset(str(tmp_path / "b"), spec, seed=0)
    catalog.write_dataset(str(tmp_path / "c"), spec, seed=1)
    first, second, other = (folder_bytes(str(tmp_path / x)) for x in "abc")
    assert len(first) == 40 * 5 + 3  # images + split, annotations, manifest
    assert first == second
    pngs = [name for name in first if name.endswith(".png")]
    assert sum(first[name] != other.get(name) for name in pngs) == len(pngs)


def test_an_image_does_not_depend_on_the_others(tmp_path):
    """Each image has its own seed: rendering one item alone gives the file written with the whole dataset."""
    from PIL import Image

    spec = small("world_counts")
    catalog.write_dataset(str(tmp_path / "d"), spec)
    items = list(catalog.dataset_items(spec))
    split, relative, label, name, scene, caption = items[len(items) // 2]
    index = int(re.search(r"_(\d+)\.png$", relative).group(1))
    rng = catalog.seeded_rng(catalog.WORLD_SEED, spec.name, split, label, index)
    fresh = catalog.sample_class_scene(rng, spec, label)
    on_disk = np.asarray(Image.open(tmp_path / "d" / catalog.IMAGE_DIR / relative).convert("RGB"))
    assert np.array_equal(render(fresh, catalog.IMAGE_SIZE), on_disk)


def test_stored_scene_parameters_render_the_stored_image(tmp_path):
    from PIL import Image

    spec = small("world_sketch", (0, 0, 1))
    folder = tmp_path / "s"
    catalog.write_dataset(str(folder), spec)
    annotations = json.loads((folder / catalog.ANNOTATIONS_FILE).read_text())
    for relative, entry in list(annotations.items())[:10]:
        image = np.asarray(Image.open(folder / catalog.IMAGE_DIR / relative).convert("RGB"))
        assert np.array_equal(render(Scene.from_dict(entry["scene"]), catalog.IMAGE_SIZE), image)


# ----- class names and captions say what is drawn -----
def class_attributes_hold(spec, label, attributes):
    fixed = spec.classes[label]
    return all(attributes[key] == value for key, value in fixed.items())


def name_from_attributes(spec, attributes):
    """The class name written again from the recomputed attributes (an independent spelling of the rule)."""
    words = {k: v for k, v in attributes.items() if k in spec.classes[0]}
    if spec.kind == "texture":
        return f"{words['colour']} {words['pattern']}"
    if spec.kind == "count":
        noun = words["shape"] if words["count"] == 1 else PLURALS[words["shape"]]
        return " ".join([COUNTS[words["count"]]] + [words[k] for k in ("pattern", "colour") if k in words] + [noun])
    return " ".join(words[k] for k in ("pattern", "colour", "shape") if k in words)


WORD_ATTRIBUTE = {
    **{c: ("colour", c) for c in COLOURS},
    **{s: ("shape", s) for s in SHAPES}, **{p: ("shape", s) for s, p in PLURALS.items()},
    "plain": ("pattern", "plain"), "striped": ("pattern", "striped"), "stripes": ("pattern", "striped"),
    "dotted": ("pattern", "dotted"), "dots": ("pattern", "dotted"), "checkered": ("pattern", "checkered"),
    "checks": ("pattern", "checkered"),
    **{w: ("count", n) for n, w in COUNTS.items()},
    "sketch": ("style", "sketch"), "drawing": ("style", "sketch"), "pixel": ("style", "mosaic"),
    "mosaic": ("style", "mosaic"), "pixelated": ("style", "mosaic"), "neon": ("style", "neon"),
}


def caption_claims(caption):
    """The attributes a caption's words claim, read from the words themselves."""
    claims = {}
    for word in re.findall(r"[a-z]+", caption):
        if word in WORD_ATTRIBUTE:
            key, value = WORD_ATTRIBUTE[word]
            claims.setdefault(key, set()).add(value)
    return claims


@pytest.mark.parametrize("name", sorted(catalog.CATALOG))
def test_class_names_and_captions_match_the_drawn_attributes(name):
    spec = small(name, (1, 0, 2))
    for split, relative, label, classname, scene, caption in catalog.dataset_items(spec):
        attributes = attributes_of(scene)
        assert class_attributes_hold(spec, label, attributes), (relative, attributes)
        assert classname == name_from_attributes(spec, attributes) == spec.classnames[label]
        assert attributes["style"] == spec.style
        for key, values in caption_claims(caption).items():
            assert values == {attributes[key]}, (caption, attributes)
        claims = caption_claims(caption)
        assert claims.get("shape", {attributes["shape"]}) == {attributes["shape"]}
        if attributes["count"] > 1:  # a picture of several things always says how many
            assert claims["count"] == {attributes["count"]}


def test_describe_reports_what_it_says():
    rng = np.random.default_rng(3)
    for kind in ("object", "count", "texture"):
        for _ in range(60):
            scene = sample_scene(rng, kind, "star" if kind != "texture" else None, "blue", "dotted",
                                 count=int(rng.integers(1, 5)), style="photo" if kind == "texture" else
                                 STYLES[int(rng.integers(0, 4))])
            caption, stated = describe(rng, scene)
            assert consistent(stated, attributes_of(scene))
            claims = caption_claims(caption)
            for key in ("colour", "shape", "pattern"):
                if key in stated and stated[key] is not None:
                    assert claims[key] == {stated[key]}, caption
                elif key != "pattern":  # "plain" aside, an unstated attribute has no word in the caption
                    assert key not in claims or kind == "texture", caption


def nearest_colour(rgb):
    names = list(COLOURS)
    prototypes = np.array([hsv_to_rgb(*COLOURS[n]) for n in names])
    return names[int(np.argmin(np.linalg.norm(prototypes - rgb, axis=1)))]


def test_the_named_colour_is_the_colour_of_the_pixels():
    """Recompute the colour from the image: the mean colour of the pixels fully inside the object and outside
    its pattern's second tone, with the camera's white balance undone, is nearest to the named colour's
    prototype. (Under the warm light of "world" a yellow object does look orange: that is the point of it.)"""
    spec = small("world", (0, 0, 3))
    checked = 0
    for split, relative, label, classname, scene, caption in catalog.dataset_items(spec):
        thing = scene.things[0]
        image = render(scene, catalog.IMAGE_SIZE).astype(np.float64)
        n = catalog.IMAGE_SIZE * SUPERSAMPLE
        inside = object_mask(thing, catalog.IMAGE_SIZE) > 0.999
        first_tone = downsample(pattern_mask(thing, n)[..., None], SUPERSAMPLE)[..., 0] < 0.001
        pixels = image[inside & first_tone]
        if len(pixels) < 5:
            continue
        neutral = pixels.mean(0) / np.asarray(scene.white_balance)  # the camera's cast taken out
        assert nearest_colour(neutral) == attributes_of(scene)["colour"], relative
        checked += 1
    assert checked > 100


def test_scenes_round_trip_through_json():
    rng = np.random.default_rng(0)
    for style in STYLES:
        scene = sample_scene(rng, "count", "heart", "pink", "checkered", count=3, style=style)
        again = Scene.from_dict(json.loads(json.dumps(scene.to_dict())))
        assert again == scene
        assert np.array_equal(render(again), render(scene))


# ----- what pretraining never shows -----
def test_each_dataset_is_under_its_own_light():
    """Pretraining images have neutral light; a dataset's cast (warm, cool) is its gains jittered per image."""
    casts = {}
    for name, spec in catalog.CATALOG.items():
        for item in catalog.dataset_items(small(name, (1, 0, 1))):
            gains = np.asarray(item[4].white_balance)
            if catalog.LIGHTS[spec.lighting] is None:
                assert np.array_equal(gains, [1.0, 1.0, 1.0])
            else:
                assert np.all(np.abs(gains - catalog.LIGHTS[spec.lighting]) <= catalog.LIGHT_JITTER)
        casts[name] = spec.lighting
    assert casts["world"] == "warm" and casts["world_textures"] == casts["world_counts"] == "cool"
    assert casts["world_signs"] == casts["world_shapes"] == "neutral"
    with pytest.raises(ValueError, match="lighting must be one of"):
        catalog.sample_class_scene(np.random.default_rng(0), dataclasses.replace(catalog.get_spec("world"),
                                                                                 lighting="green"), 0)


def test_base_classes_are_never_pretraining_images_and_new_classes_are():
    from datasets.world.pretraining import sample_pretraining_scene

    holdouts = catalog.pretraining_holdouts(catalog.CATALOG)
    base, new = {}, {}  # per dataset: the class keys of each half
    for name in catalog.SUITE:
        spec = catalog.get_spec(name)
        half = len(spec.classes) // 2
        base[name] = {tuple(sorted(c.items())) for c in spec.classes[:half]}
        new[name] = {tuple(sorted(c.items())) for c in spec.classes[half:]}
    # world_shapes' classes fix a shape alone: hiding one would hide the word
    assert len(holdouts) == sum(len(base[n]) for n in catalog.SUITE if n != "world_shapes") == 64
    rng = np.random.default_rng(0)
    shown = {name: set() for name in catalog.SUITE}
    for _ in range(6000):
        scene = sample_pretraining_scene(rng, holdouts)
        a = attributes_of(scene)
        assert scene.white_balance == (1.0, 1.0, 1.0)  # pretraining never shows the datasets' light casts
        for name in catalog.SUITE:
            spec = catalog.get_spec(name)
            if scene.kind not in catalog.SHOWN_BY[spec.kind] or scene.style != spec.style:
                continue
            for key in base[name] | new[name]:
                if all(a.get(k) == v for k, v in key):
                    shown[name].add(key)
    for name in catalog.SUITE:
        if name == "world_shapes":
            assert shown[name] == base[name] | new[name]
            continue
        assert not shown[name] & base[name], name
        assert len(shown[name] & new[name]) >= 0.75 * len(new[name]), name  # the new classes are drawn as any other


# ----- pretraining objective -----
def test_consistency_matrix_matches_a_direct_check():
    rng = np.random.default_rng(1)
    scenes = [sample_scene(rng, ("object", "count", "texture")[i % 3], SHAPES[i % 3] if i % 3 != 2 else None,
                           list(COLOURS)[i % 2], list(PATTERNS)[i % 4], count=1 + i % 2) for i in range(24)]
    described = [describe(rng, s) for s in scenes]
    matrix = consistency_matrix(np.stack([attribute_codes(st) for _, st in described]),
                                np.stack([attribute_codes(attributes_of(s)) for s in scenes]))
    expected = np.array([[consistent(st, attributes_of(s)) for s in scenes] for _, st in described])
    assert np.array_equal(matrix, expected)
    assert matrix.diagonal().all() and not matrix.all()
    assert attribute_codes({}).tolist() == [-1] * len(ATTRIBUTE_KEYS)


def load_script(name):
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", name)
    spec = importlib.util.spec_from_file_location(name.replace(".py", ""), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_contrastive_loss_is_clips_loss_when_every_caption_is_unique():
    import torch
    import torch.nn.functional as F

    pretrain = load_script("pretrain_world_clip.py")
    torch.manual_seed(0)
    x, y = F.normalize(torch.randn(6, 8), dim=-1), F.normalize(torch.randn(6, 8), dim=-1)
    logits = 10.0 * x @ y.t()
    clip_loss = (F.cross_entropy(logits, torch.arange(6)) + F.cross_entropy(logits.t(), torch.arange(6))) / 2
    ours = pretrain.contrastive_loss(x, y, torch.tensor(10.0), torch.eye(6, dtype=torch.bool))
    assert torch.allclose(ours, clip_loss)
    # A caption true of two images splits its target between them.
    positives = torch.eye(6, dtype=torch.bool)
    positives[0, 1] = True
    target_t2i = torch.eye(6)
    target_t2i[0] = torch.tensor([0.5, 0.5, 0, 0, 0, 0])
    target_i2t = positives.t().float() / positives.t().float().sum(1, keepdim=True)
    expected = (-(F.log_softmax(logits, 1) * target_i2t).sum(1).mean()
                - (F.log_softmax(logits.t(), 1) * target_t2i).sum(1).mean()) / 2
    assert torch.allclose(pretrain.contrastive_loss(x, y, torch.tensor(10.0), positives), expected)


def test_the_saved_weights_carry_the_chosen_logit_scale_and_the_report_the_learned_one(tmp_path):
    """As a user runs it (a fresh interpreter): ``--logit-scale 50`` saves 50 in the weights; the report keeps the
    scale the pretraining learned; ``--logit-scale 0`` saves the learned one."""
    import subprocess
    import sys

    import torch

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tiny = ["--pool", "48", "--steps", "3", "--batch", "16", "--warmup", "1", "--vision-layers", "1", "--text-layers",
            "1", "--embed-dim", "64", "--vision-width", "64", "--text-width", "64", "--threads", "1", "--skip-eval"]
    saved = {}
    for scale in ("50", "0"):
        output = tmp_path / f"scale{scale}.pt"
        done = subprocess.run([sys.executable, "scripts/pretrain_world_clip.py", *tiny, "--logit-scale", scale,
                               "--output", str(output)], cwd=repo, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        state = torch.load(output, map_location="cpu", weights_only=True)
        saved[scale] = (state["logit_scale"].float().exp().item(),
                        json.loads((tmp_path / f"scale{scale}.json").read_text()))
    assert abs(saved["50"][0] - 50.0) < 0.1 and saved["50"][1]["settings"]["logit_scale"] == 50.0
    learned = saved["50"][1]["learned_logit_scale"]
    assert abs(learned - 50.0) > 1.0  # a few steps from CLIP's initial 1/0.07
    assert saved["0"][1]["learned_logit_scale"] == learned  # the same run: deterministic
    assert abs(saved["0"][0] - learned) < 0.05  # fp16 rounding of the learned scale


def test_a_grouped_batch_holds_images_of_k_colours_only():
    import torch

    pretrain = load_script("pretrain_world_clip.py")
    colours = np.array(["red", "blue", "green", "red", "blue", "green", "pink", "red", "pink"] * 4)
    by_colour = [torch.from_numpy(np.flatnonzero(colours == c)) for c in sorted(set(colours))]
    args = pretrain.build_parser().parse_args(["--grouped", "2", "--batch", "6"])
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        index = pretrain.grouped_batch(by_colour, args, generator)
        assert len(index) == 6 and len(set(index.tolist())) == 6  # 3 distinct images of each of the 2 colours
        assert len(set(colours[index])) == 2


# ----- generation on disk: once, whole, safe under concurrency and crashes -----
@pytest.fixture
def tiny_catalog(monkeypatch):
    spec = small("world_textures", (1, 1, 1))
    monkeypatch.setitem(catalog.CATALOG, spec.name, spec)
    return spec


def test_ensure_generates_once_and_checks_the_manifest(tmp_path, tiny_catalog):
    root = str(tmp_path / "data")  # does not exist yet
    folder = catalog.ensure_dataset(root, tiny_catalog.name, log=lambda _: None)
    stamp = os.path.getmtime(os.path.join(folder, catalog.MANIFEST_FILE))
    assert catalog.ensure_dataset(root, tiny_catalog.name, log=lambda _: None) == folder
    assert os.path.getmtime(os.path.join(folder, catalog.MANIFEST_FILE)) == stamp
    assert os.listdir(root) == [tiny_catalog.name]  # no temporary folder left
    manifest = json.loads(open(os.path.join(folder, catalog.MANIFEST_FILE)).read())
    manifest["generator_version"] = -1
    with open(os.path.join(folder, catalog.MANIFEST_FILE), "w") as handle:
        json.dump(manifest, handle)
    with pytest.raises(catalog.WorldDataError, match="Delete it"):
        catalog.ensure_dataset(root, tiny_catalog.name)
    os.remove(os.path.join(folder, catalog.MANIFEST_FILE))
    with pytest.raises(catalog.WorldDataError, match="not a generated world dataset"):
        catalog.ensure_dataset(root, tiny_catalog.name)


def test_a_crash_leaves_no_half_dataset(tmp_path, tiny_catalog, monkeypatch):
    calls = []

    def failing_render(scene, size):
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return render(scene, size)

    monkeypatch.setattr(catalog, "render", failing_render)
    root = str(tmp_path / "data")
    with pytest.raises(KeyboardInterrupt):
        catalog.ensure_dataset(root, tiny_catalog.name, log=lambda _: None)
    assert os.listdir(root) == []
    monkeypatch.setattr(catalog, "render", render)
    folder = catalog.ensure_dataset(root, tiny_catalog.name, log=lambda _: None)
    assert len(json.load(open(os.path.join(folder, catalog.SPLIT_FILE)))["test"]) == len(tiny_catalog.classes)


def _generate(root, name, queue):
    try:
        queue.put(catalog.ensure_dataset(root, name, log=lambda _: None))
    except BaseException as err:  # reported to the parent
        queue.put(repr(err))


def test_concurrent_first_uses_end_with_one_complete_copy(tmp_path, tiny_catalog):
    reference = tmp_path / "reference"
    catalog.write_dataset(str(reference), tiny_catalog)
    root = str(tmp_path / "data")
    context = multiprocessing.get_context("fork")  # the children see the patched catalog
    queue = context.Queue()
    workers = [context.Process(target=_generate, args=(root, tiny_catalog.name, queue)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    results = [queue.get(timeout=5) for _ in workers]
    assert results == [os.path.join(root, tiny_catalog.name)] * 3
    assert os.listdir(root) == [tiny_catalog.name]
    assert folder_bytes(results[0]) == folder_bytes(str(reference))


def test_pretraining_is_deterministic():
    import torch

    pretrain = load_script("pretrain_world_clip.py")
    settings = ["--pool", "48", "--steps", "3", "--batch", "16", "--warmup", "1", "--vision-layers", "1",
                "--text-layers", "1", "--log-every", "100"]

    def weights(seed):
        model, _ = pretrain.train(pretrain.build_parser().parse_args(settings + ["--seed", str(seed)]),
                                  log=lambda _: None)
        return model.state_dict()

    first, second, other = weights(0), weights(0), weights(1)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["visual.proj"], other["visual.proj"])
    initial = pretrain.build_model(pretrain.build_parser().parse_args(settings)).state_dict()
    assert not torch.equal(first["visual.proj"], initial["visual.proj"])  # it did train


# ----- the suite of base-to-new datasets -----
@pytest.mark.parametrize("name", catalog.SUITE)
def test_suite_datasets_split_their_classes_into_base_and_new(name):
    """Each suite dataset has distinct class names, both halves non-empty, >= 16 shots to draw and >= 100 test
    images per class; its template names the class once."""
    spec = catalog.get_spec(name)
    names = spec.classnames
    assert len(set(names)) == len(names) >= 10
    half = (len(names) + 1) // 2
    base, new = set(names[:half]), set(names[half:])
    assert base and new and not base & new
    train, val, test = spec.per_split
    assert train >= 16 and val >= 1 and test >= 100 and not spec.test_only
    assert spec.template.count("{}") == 1


# The words both halves of a dataset may share: the count words (both halves of world_counts count from one to four).
SHARED_WORDS = set(COUNTS.values())


@pytest.mark.parametrize("name", catalog.SUITE)
def test_no_new_class_name_uses_a_word_of_the_base_class_names(name):
    """As on the real benchmarks, the new half brings words of its own: no word of a new class's name (other than a
    count) is in the base half's names, and each half's words are the catalog's words for that half."""
    spec = catalog.get_spec(name)
    half = (len(spec.classes) + 1) // 2
    words = [set(spec.classname(label).split()) for label in range(len(spec.classes))]
    base_words, new_words = set().union(*words[:half]), set().union(*words[half:])
    assert not (base_words & new_words) - SHARED_WORDS, (base_words & new_words)
    for attrs in spec.classes[:half]:
        assert all(value in catalog.BASE_WORDS[key] for key, value in attrs.items() if key != "count"), attrs
    for attrs in spec.classes[half:]:
        assert all(value in catalog.NEW_WORDS[key] for key, value in attrs.items() if key != "count"), attrs
    assert not set(catalog.BASE_WORDS) ^ set(catalog.NEW_WORDS)
    for key in catalog.BASE_WORDS:  # every word of the world is one half's
        assert not set(catalog.BASE_WORDS[key]) & set(catalog.NEW_WORDS[key])
    assert set(catalog.BASE_WORDS["colour"] + catalog.NEW_WORDS["colour"]) == set(COLOURS)
    assert set(catalog.BASE_WORDS["shape"] + catalog.NEW_WORDS["shape"]) == set(SHAPES)
    assert set(catalog.BASE_WORDS["pattern"] + catalog.NEW_WORDS["pattern"]) == set(PATTERNS)


def test_the_suite_has_datasets_of_different_character():
    specs = [catalog.get_spec(name) for name in catalog.SUITE]
    assert len(specs) >= 5
    assert {spec.kind for spec in specs} == {"object", "count", "texture"}
    assert len({spec.style for spec in specs}) >= 2
    assert len({spec.template for spec in specs}) >= 3
    vocabularies = {tuple(sorted(spec.classes[0])) for spec in specs}
    assert len(vocabularies) == len(specs)  # each names its classes by other attributes


@pytest.mark.parametrize("name", catalog.SUITE)
def test_suite_datasets_are_the_same_bytes_in_any_order(tmp_path, name):
    """Rendering a dataset's items in reverse order gives the files written in order, byte for byte."""
    from PIL import Image

    spec = small(name, (1, 1, 2))
    catalog.write_dataset(str(tmp_path / "a"), spec)
    written = folder_bytes(str(tmp_path / "a"))
    for split, relative, label, _, _, _ in reversed(list(catalog.dataset_items(spec))):
        index = int(re.search(r"_(\d+)\.png$", relative).group(1))
        scene = catalog.sample_class_scene(catalog.seeded_rng(catalog.WORLD_SEED, spec.name, split, label, index),
                                           spec, label)
        out = tmp_path / "b" / relative
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(render(scene, catalog.IMAGE_SIZE)).save(out, format="PNG", optimize=False, compress_level=6)
        assert out.read_bytes() == written[os.path.join(catalog.IMAGE_DIR, relative)]


def test_another_image_seed_renders_the_same_classes_with_other_images(tmp_path):
    spec = small("world_signs", (1, 0, 1))
    catalog.write_dataset(str(tmp_path / "a"), spec, seed=0)
    catalog.write_dataset(str(tmp_path / "b"), spec, seed=1)
    first, other = folder_bytes(str(tmp_path / "a")), folder_bytes(str(tmp_path / "b"))
    assert json.loads(first[catalog.SPLIT_FILE]) == json.loads(other[catalog.SPLIT_FILE])  # same items and labels
    pngs = [name for name in first if name.endswith(".png")]
    assert pngs and all(first[name] != other[name] for name in pngs)
    assert json.loads(other[catalog.MANIFEST_FILE])["seed"] == 1


def test_image_seeds_live_in_their_own_folders(tmp_path, tiny_catalog):
    root = str(tmp_path / "data")
    default = catalog.ensure_dataset(root, tiny_catalog.name, log=lambda _: None)
    seeded = catalog.ensure_dataset(root, tiny_catalog.name, seed=7, log=lambda _: None)
    assert os.path.basename(default) == tiny_catalog.name
    assert os.path.basename(seeded) == f"{tiny_catalog.name}_imageseed7"
    assert folder_bytes(default) != folder_bytes(seeded)
    # A folder of one seed is never taken for another's.
    os.rename(seeded, os.path.join(root, "moved"))
    os.rename(default, seeded)
    with pytest.raises(catalog.WorldDataError, match="seed differ"):
        catalog.ensure_dataset(root, tiny_catalog.name, seed=7)
    for bad in (-1, 1.5, "1", True):
        with pytest.raises(ValueError, match="non-negative integer"):
            catalog.folder_name("world", bad)


def test_each_dataset_has_an_ensemble_of_its_pretraining_phrasings():
    """TEMPLATES ensemble on the world: the dataset's template first, then the phrases of its style that the
    pretraining captions use, and the bare name; each names the class once."""
    from datasets.world.attributes import STYLE_PHRASES
    from trainers.templates import ENSEMBLE_TEMPLATES, select_templates

    assert catalog.get_spec("world_signs").ensemble == (
        "a neon sign of a {}.", "a glowing neon image of a {}.", "a neon picture of a {}.", "a {}.")
    assert catalog.get_spec("world_counts").ensemble == (
        "a photo of {}.", "a picture of {}.", "an image of {}.", "{}.")
    for spec in catalog.CATALOG.values():
        assert spec.ensemble[0] == spec.template and len(set(spec.ensemble)) == len(spec.ensemble) >= 4
        assert all(t.count("{}") == 1 for t in spec.ensemble)
        style = "photo" if spec.kind == "texture" else spec.style
        assert all(any(t.startswith(p) for p in STYLE_PHRASES[style]) for t in spec.ensemble[1:-1])
    assert select_templates("ensemble", "t {}.", True, catalog.get_spec("world").ensemble) == \
        catalog.get_spec("world").ensemble
    assert select_templates("ensemble", "t {}.", True, ()) == ENSEMBLE_TEMPLATES + ("t {}.",)
