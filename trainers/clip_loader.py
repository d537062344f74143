"""Loading OpenAI CLIP: a named model (downloaded once into a cache folder) or a local weights file."""
import contextlib
import os
import warnings
import zipfile

import torch

PRECISIONS = ("fp16", "fp32", "amp", "bf16")

# Shapes of the OpenAI CLIP models (read off their released weights), to build random-weight copies for
# benchmarks and tests: embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size,
# transformer_width, transformer_layers. Every model uses 77 text positions, a 49,408-token vocabulary and
# heads = width / 64. "tiny" is the test suite's small model.
ARCHITECTURES = {
    "RN50": (1024, 224, (3, 4, 6, 3), 64, None, 512, 12),
    "RN101": (512, 224, (3, 4, 23, 3), 64, None, 512, 12),
    "ViT-B/32": (512, 224, 12, 768, 32, 512, 12),
    "ViT-B/16": (512, 224, 12, 768, 16, 512, 12),
    "ViT-L/14": (768, 224, 24, 1024, 14, 768, 12),
    "tiny": (32, 32, 2, 64, 8, 64, 2),
}


class ClipWeightsError(RuntimeError):
    pass


def _clip():
    from clip import clip

    return clip


def resolve_weights_file(name, path="", cache_dir="~/.cache/clip"):
    """The local file holding the weights for backbone ``name``, downloading it if needed."""
    if path:
        path = os.path.expanduser(path)
        if not os.path.isfile(path):
            raise ClipWeightsError(
                f"MODEL.BACKBONE.PATH points to {path}, which is not a file. Give the path of a CLIP "
                f".pt file (JIT archive or state dict), or leave it empty to use the named backbone {name!r}."
            )
        return path
    if os.path.isfile(os.path.expanduser(name)):
        return os.path.expanduser(name)
    clip = _clip()
    if name not in clip._MODELS:
        raise ClipWeightsError(
            f"Unknown CLIP backbone {name!r}. Known names: {', '.join(clip.available_models())}; "
            "or set MODEL.BACKBONE.PATH to a local weights file."
        )
    url = clip._MODELS[name]
    cache_dir = os.path.expanduser(cache_dir)
    try:
        return clip._download(url, cache_dir)
    except Exception as err:  # no network, proxy, refused, partial file...
        filename = os.path.basename(url)
        raise ClipWeightsError(
            f"Could not download the CLIP weights for {name!r} ({err}).\n"
            f"On a machine without internet, fetch {url} elsewhere, then either put {filename} in "
            f"{cache_dir} (MODEL.BACKBONE.CACHE_DIR) or pass MODEL.BACKBONE.PATH /path/to/{filename}."
        ) from None


def is_torchscript_archive(path):
    # Both formats are zip files; only TorchScript archives carry compiled code under "<name>/code/".
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def read_state_dict(weights_file):
    """Weights of a JIT archive or a (possibly wrapped) state dict, loaded without running pickled code."""
    if is_torchscript_archive(weights_file):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated, the OpenAI files are JIT
            return torch.jit.load(weights_file, map_location="cpu").state_dict()
    try:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ClipWeightsError(
            f"{weights_file} is neither a TorchScript archive nor a state dict that loads with "
            f"weights_only=True ({err})."
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or "text_projection" not in state:
        raise ClipWeightsError(f"{weights_file} does not hold CLIP weights (no 'text_projection' entry).")
    return state


def load_clip(name, path="", cache_dir="~/.cache/clip"):
    """A CLIP model in fp32 on the CPU, in eval mode, built with the ``clip`` package's own classes."""
    from clip.model import build_model

    state_dict = dict(read_state_dict(resolve_weights_file(name, path, cache_dir)))
    model = build_model(state_dict).float()
    # build_model stores the weights in fp16; load them again in fp32 so fp32 files keep their precision.
    model.load_state_dict(state_dict)
    return model.eval()


def random_clip(architecture="ViT-B/16", seed=0):
    """A CLIP of a released architecture with random weights (fp32, eval mode)."""
    from clip.model import CLIP

    if architecture not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")
    embed, resolution, v_layers, v_width, patch, t_width, t_layers = ARCHITECTURES[architecture]
    torch.manual_seed(seed)
    model = CLIP(embed, resolution, v_layers, v_width, patch, 77, 49408, t_width, t_width // 64, t_layers)
    return model.float().eval()


def resolve_precision(prec, device):
    """The precision that will actually run: fp16 and amp need CUDA and fall back to fp32 on the CPU."""
    if prec not in PRECISIONS:
        raise ValueError(f"PREC must be one of {', '.join(PRECISIONS)}; got {prec!r}")
    if torch.device(device).type != "cuda" and prec in ("fp16", "amp"):
        warnings.warn(f"PREC {prec} needs a CUDA device; running in fp32 on {device}.", stacklevel=2)
        return "fp32"
    return prec


def cast_frozen_weights(clip_model, dtype):
    """CLIP with its weights in ``dtype``, except the LayerNorms, which stay fp32 as in CLIP's own fp16 conversion:
    CLIP's ``LayerNorm`` normalises in fp32, and fp32 inputs with fp16 / bf16 parameters fail on every device."""
    clip_model.to(dtype)
    for module in clip_model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.float()
    return clip_model


def precision_autocast(prec):
    """The context a forward pass runs in: amp keeps the weights in fp32 under fp16 autocast on CUDA; the other
    precisions run in their weights' dtype."""
    if prec == "amp":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def grad_scaler(prec):
    """amp's loss scaler (fp16 gradients of an unscaled loss underflow); None for the other precisions."""
    return torch.amp.GradScaler("cuda") if prec == "amp" else None


def backward_and_step(loss, optimizer, scaler=None):
    """The backward pass and one optimiser step; with amp's scaler, of the scaled loss, the step taken only when the
    gradients are finite, and the scale adapted."""
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def weights_dtype(prec):
    """The dtype the frozen CLIP weights are stored in for a precision (amp keeps fp32 and autocasts)."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(prec, torch.float32)


def load_frozen_clip(backbone, input_size, precision):
    """The CLIP of the ``MODEL.BACKBONE`` config node, its weights frozen in the dtype of ``precision``; an input
    size other than the model's resolution is a config error."""
    print(f"Loading CLIP (backbone: {backbone.NAME}{', file ' + backbone.PATH if backbone.PATH else ''})")
    clip_model = load_clip(backbone.NAME, backbone.PATH, backbone.CACHE_DIR)
    resolution = clip_model.visual.input_resolution
    if tuple(input_size) != (resolution, resolution):
        raise ValueError(f"INPUT.SIZE is {tuple(input_size)} but this CLIP takes {resolution}x{resolution} images: "
                         f"set INPUT.SIZE ({resolution}, {resolution}).")
    cast_frozen_weights(clip_model, weights_dtype(precision))
    return clip_model
