"""Image files of every common kind are read as RGB, or reported by name (no Dassl needed)."""
import numpy as np
import pytest
from PIL import Image

from common.images import ImageReadError, read_rgb


def save(path, array_or_image, **kwargs):
    image = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    image.save(path, **kwargs)
    return str(path)


def test_every_mode_becomes_rgb_with_the_right_content(tmp_path):
    gray = np.full((8, 8), 200, np.uint8)
    rgb = read_rgb(save(tmp_path / "gray.png", gray))
    assert rgb.mode == "RGB" and np.asarray(rgb)[0, 0].tolist() == [200, 200, 200]

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 0  # red, fully transparent: alpha is dropped (as PIL and CLIP do)
    assert np.asarray(read_rgb(save(tmp_path / "alpha.png", rgba)))[0, 0].tolist() == [255, 0, 0]

    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    assert np.asarray(read_rgb(save(tmp_path / "cmyk.jpg", cmyk, quality=100)))[0, 0].tolist() == \
        pytest.approx([255, 0, 0], abs=3)

    palette = Image.new("P", (8, 8))
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.putpixel((0, 0), 1)
    assert np.asarray(read_rgb(save(tmp_path / "palette.png", palette)))[0, 0].tolist() == [10, 20, 30]

    deep = Image.new("I;16", (8, 8), 65535 // 2)  # a mid-grey in 16 bits must stay mid-grey, not clip to white
    value = np.asarray(read_rgb(save(tmp_path / "deep.png", deep)))[0, 0]
    assert value.tolist() == pytest.approx([128, 128, 128], abs=1)


def test_broken_files_are_reported_by_name(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    good = save(tmp_path / "good.jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(open(good, "rb").read()[:400])
    for path in (empty, junk, truncated, tmp_path / "missing.jpg"):
        with pytest.raises(ImageReadError, match=path.name):
            read_rgb(str(path))
