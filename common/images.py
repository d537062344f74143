"""Reading an image file as RGB whatever its mode, or failing with the file's name (no Dassl needed)."""
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError


class ImageReadError(RuntimeError):
    pass


def _to_8bit(img):
    """16- and 32-bit grayscale (modes I;16*, I, F) scaled to 8 bits; PIL's own conversion would clip them."""
    values = np.asarray(img, dtype=np.float64)
    top = 65535.0 if img.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
    if img.mode == "F":
        top = max(values.max(initial=0), 1.0)
    return Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8))


def read_rgb(path):
    """The image at ``path`` in RGB: grayscale, palette, CMYK and alpha images are converted as PIL and CLIP do
    (alpha dropped); 16-bit images are rescaled; empty, truncated or unknown files, and files declaring more pixels
    than PIL's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, warning or error alike), raise
    ``ImageReadError``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                if img.mode.startswith("I") or img.mode == "F":
                    img = _to_8bit(img)
                return img.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageReadError(f"Cannot read image {path}: {err} Shrink the image or remove it from the dataset.") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ImageReadError(f"Cannot read image {path}: {type(err).__name__}: {err}") from None
