"""CLIP loading: local files (state dict or TorchScript archive), named models through the clip package's cache,
clear errors offline, and the precision rules."""
import hashlib
import os
import urllib.error
import warnings

import pytest
import torch
from fixtures import tiny_clip

from trainers import clip_loader
from trainers.clip_loader import ClipWeightsError, load_clip, resolve_precision


def assert_same_weights(model, reference):
    ours, theirs = model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key])


def test_local_state_dict_file(tmp_path):
    reference = tiny_clip(seed=4)
    torch.save(reference.state_dict(), tmp_path / "w.pt")
    model = load_clip("ViT-B/16", path=str(tmp_path / "w.pt"))
    assert_same_weights(model, reference)
    assert model.dtype == torch.float32 and not model.training
    # A checkpoint that wraps the state dict in {"state_dict": ...} is accepted too.
    torch.save({"state_dict": reference.state_dict()}, tmp_path / "wrapped.pt")
    assert_same_weights(load_clip("ViT-B/16", path=str(tmp_path / "wrapped.pt")), reference)


def test_local_torchscript_archive(tmp_path):
    reference = tiny_clip(seed=5)
    image, text = torch.randn(1, 3, 32, 32), torch.zeros(1, 77, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(reference, (image, text), check_trace=False)
    traced.save(str(tmp_path / "jit.pt"))
    assert clip_loader.is_torchscript_archive(str(tmp_path / "jit.pt"))
    assert_same_weights(load_clip("ViT-B/16", path=str(tmp_path / "jit.pt")), reference)


def test_named_model_comes_from_the_clip_cache_folder(tmp_path, monkeypatch):
    from clip import clip

    weights = tmp_path / "Tiny.pt"
    torch.save(tiny_clip(seed=6).state_dict(), weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    # A named model whose file is already in the cache folder with the right checksum is not downloaded again.
    monkeypatch.setitem(clip._MODELS, "Tiny", f"https://weights.invalid/clip/{digest}/Tiny.pt")
    assert_same_weights(load_clip("Tiny", cache_dir=str(tmp_path)), tiny_clip(seed=6))


def test_offline_named_model_says_which_file_to_supply(tmp_path, monkeypatch):
    from clip import clip

    def offline(url, root):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(clip, "_download", offline)
    with pytest.raises(ClipWeightsError) as error:
        load_clip("ViT-B/16", cache_dir=str(tmp_path))
    message = str(error.value)
    assert "ViT-B-16.pt" in message and str(tmp_path) in message and "MODEL.BACKBONE.PATH" in message


def test_bad_names_and_files(tmp_path):
    with pytest.raises(ClipWeightsError, match="Unknown CLIP backbone 'ViT-X/99'.*ViT-B/16"):
        load_clip("ViT-X/99")
    with pytest.raises(ClipWeightsError, match="not a file"):
        load_clip("ViT-B/16", path=str(tmp_path / "missing.pt"))
    (tmp_path / "junk.pt").write_bytes(os.urandom(64))
    with pytest.raises(ClipWeightsError, match="neither a TorchScript archive nor a state dict"):
        load_clip("ViT-B/16", path=str(tmp_path / "junk.pt"))
    torch.save({"weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ClipWeightsError, match="does not hold CLIP weights"):
        load_clip("ViT-B/16", path=str(tmp_path / "other.pt"))


def test_precision_rules():
    with pytest.warns(UserWarning, match="fp16 needs a CUDA device; running in fp32"):
        assert resolve_precision("fp16", "cpu") == "fp32"
    with pytest.warns(UserWarning, match="amp needs a CUDA device"):
        assert resolve_precision("amp", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("fp16", "cuda") == "fp16"
    with pytest.raises(ValueError, match="PREC must be one of"):
        resolve_precision("int8", "cpu")


def test_random_architectures_match_the_released_shapes():
    model = clip_loader.random_clip("tiny")
    assert model.visual.input_resolution == 32 and model.token_embedding.weight.shape == (49408, 64)
    with pytest.raises(ValueError, match="Unknown architecture"):
        clip_loader.random_clip("ViT-Z")
