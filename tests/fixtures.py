"""Things the tests build on the fly: a tiny CLIP with random weights and small datasets on disk in the real
layouts (image folders + CoOp split JSON)."""
import json
import os

import numpy as np
import torch

TINY = dict(
    embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
    context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=2,
)

PET_CLASSES = ["abyssinian", "american_bulldog", "basset_hound", "beagle", "bengal", "birman"]


def tiny_clip(seed=0, **overrides):
    from clip.model import CLIP

    torch.manual_seed(seed)
    model = CLIP(**{**TINY, **overrides}).float().eval()
    # initialize_parameters leaves some tensors near zero; perturb them so every path carries signal.
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    return model


def save_tiny_clip(path, seed=0, **overrides):
    torch.save(tiny_clip(seed, **overrides).state_dict(), path)
    return path


def class_colour(label, n):
    hue = label / max(n, 1)
    return np.array([np.cos(2 * np.pi * hue), np.cos(2 * np.pi * (hue + 1 / 3)), np.cos(2 * np.pi * (hue + 2 / 3))])


def write_image(path, label, n_classes, rng, size=32):
    from PIL import Image

    base = (class_colour(label, n_classes) * 0.4 + 0.5) * 255
    pixels = np.clip(base + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).save(path)


def make_split_dataset(root, dataset_dir="oxford_pets", image_dir="images", split_name="split_zhou_OxfordPets.json",
                       classes=PET_CLASSES, per_split=(6, 2, 4), seed=0):
    """A dataset laid out like CoOp's: ``root/dataset_dir/image_dir/*.jpg`` and the split JSON beside them."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, dataset_dir)
    split = {}
    for name, count in zip(("train", "val", "test"), per_split):
        entries = []
        for label, classname in enumerate(classes):
            for i in range(count):
                relative = f"{classname}_{name}_{i}.jpg"
                write_image(os.path.join(folder, image_dir, relative), label, len(classes), rng)
                entries.append([relative, label, classname])
        split[name] = entries
    with open(os.path.join(folder, split_name), "w") as handle:
        json.dump(split, handle)
    return folder


# ----- running the real command line (integration tests) -----
import subprocess  # noqa: E402
import sys  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_overrides(clip_file, epochs=2, batch=4):
    """Config overrides that make any official config run on the tiny CLIP on a CPU in seconds."""
    return [
        "MODEL.BACKBONE.PATH", str(clip_file), "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0",
        "OPTIM.MAX_EPOCH", str(epochs), "DATALOADER.TRAIN_X.BATCH_SIZE", str(batch),
        "DATALOADER.TEST.BATCH_SIZE", "16", "TRAIN.PRINT_FREQ", "1000",
        # one epoch cannot hold the official configs' warm-up epoch (refused: it would train at the warm-up rate)
        *(["OPTIM.WARMUP_EPOCH", "0"] if epochs <= 1 else []),
    ]


def run_command(cmd, env=None, check=True):
    full_env = {**os.environ, "OUTDATED_IGNORE": "1", "DUALMI_ENV_INFO": "0", "PYTHON": sys.executable, **(env or {})}
    result = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n{result.stdout[-4000:]}\n"
                             f"{result.stderr[-4000:]}")
    return result


def run_train(args, **kwargs):
    return run_command([sys.executable, "train.py", *map(str, args)], **kwargs)


def run_script(script, args, overrides=(), **kwargs):
    extra = ["--", *map(str, overrides)] if overrides else []
    return run_command(["bash", f"scripts/{script}", *map(str, args), *extra], **kwargs)


def pets_setup(tmp_path, classes=PET_CLASSES, per_split=(6, 2, 4)):
    """A data root with a small OxfordPets-layout dataset and a tiny CLIP weights file: (root, clip_file)."""
    root = tmp_path / "data"
    make_split_dataset(str(root), classes=classes, per_split=per_split)
    clip_file = save_tiny_clip(str(tmp_path / "tiny_clip.pt"))
    return root, clip_file


def make_folder_dataset(folder, splits, classes, per_split, seed=0):
    """A folder-per-class layout like ImageNet's: ``folder/<split>/<wnid>/*.jpg`` for each split path in ``splits``,
    and ``classnames.txt`` (``<wnid> <class name>`` lines) in ``folder``'s parent. ``classes``: ``{wnid: name}``."""
    rng = np.random.default_rng(seed)
    for split, count in zip(splits, per_split):
        for label, wnid in enumerate(classes):
            for i in range(count):
                write_image(os.path.join(folder, split, wnid, f"{wnid}_{i}.jpg"), label, len(classes), rng)
    with open(os.path.join(os.path.dirname(folder), "classnames.txt"), "w") as handle:
        handle.writelines(f"{wnid} {name}\n" for wnid, name in classes.items())


IMAGENET_CLASSES = {"n01440764": "tench", "n01443537": "goldfish", "n01484850": "great white shark",
                    "n01491361": "tiger shark"}


def imagenet_setup(root, classes=IMAGENET_CLASSES, per_split=(3, 2)):
    """ImageNet's layout (``imagenet/images/{train,val}/<wnid>/``, ``imagenet/classnames.txt``) under ``root``."""
    make_folder_dataset(os.path.join(root, "imagenet", "images"), ("train", "val"), classes, per_split)
    return os.path.join(root, "imagenet")


def assert_gradients_close(actual, expected, rtol=1e-4, scale_tol=1e-5):
    """Gradients ``{name: tensor}`` equal up to float noise: elementwise ``rtol``, plus an absolute tolerance
    scaled by each tensor's largest entry (summation orders differ between equivalent computations)."""
    import torch

    assert set(actual) == set(expected), (sorted(actual), sorted(expected))
    for name, value in expected.items():
        tolerance = scale_tol * float(value.abs().max()) + 1e-12
        torch.testing.assert_close(actual[name], value, rtol=rtol, atol=tolerance,
                                   msg=lambda message, name=name: f"gradient of {name}: {message}")


def flat(node, prefix=""):
    """``{"A.B.C": value}`` of a nested config (dicts or yacs nodes, which are dicts)."""
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ----- a read-only folder (the tests run as root, which file modes do not stop) -----
import shutil  # noqa: E402


def read_only(folder, command):
    """``command`` run with ``folder`` mounted read-only (a user and mount namespace: no privileges needed, and
    the tests' root user cannot bypass a read-only mount as it bypasses file modes)."""
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && shift && exec "$@"'
    return ["unshare", "-rm", "sh", "-c", script, "sh", str(folder), *map(str, command)]


def can_mount_read_only(tmp_path):
    if not shutil.which("unshare"):
        return False
    return subprocess.run(read_only(tmp_path, ["true"]), capture_output=True).returncode == 0
