"""Robust image loading to 8-bit RGB: the converters' writer, and the rule our LLaMA-Factory image patch applies.

Every failure is an `ImageError(reason, detail)` with a reason from `schema` (never a bare PIL exception), so
a bad image becomes one line of the skip report instead of a crash hours into training. What is handled:

- zero-byte file -> `empty_image_file`; missing file -> `missing_image`;
- truncated JPEG/PNG -> `truncated_image` (PIL's LOAD_TRUNCATED_IMAGES stays off: grey-filled halves of
  images are worse than a skipped record);
- decompression bombs: width x height above `max_image_pixels` -> `image_too_large`, checked from the
  header before any pixel is decoded;
- wrong file extension: the format is sniffed from the bytes; `extension()` gives the right one;
- what the model sees: `model_image` is the one rule from a decoded file to pixels, shared with the
  registered LLaMA-Factory patch (`plugins/image_decode.py`), so a converted image and a referenced one reach
  the model alike:
  - EXIF orientation is applied (the pixels are rotated as a viewer shows them; processors ignore EXIF);
  - animated GIF/WebP/APNG: the first frame;
  - 16-bit and 32-bit greys (`I;16`, `I;16B`, `I;16L`, `I`, `F`) -> 8 bits by the image's own range
    (min -> 0, max -> 255, linear): Pillow's own conversion clips every value above 255 to white. A
    calibrated window (CT Hounsfield units) is the user's choice: `vlmr convert ct` or windowing by hand;
  - transparency (palette, LA, PA, RGBA, a tRNS colour) composited on white, as qwen-vl-utils' `to_rgb` does;
  - CMYK, YCbCr, LAB, HSV, 1, L -> RGB by Pillow (16-bit RGB files are read by Pillow as 8-bit RGB already).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from vlmrecipes.data_converters.schema import (
    EMPTY_IMAGE_FILE,
    IMAGE_TOO_LARGE,
    MISSING_IMAGE,
    TRUNCATED_IMAGE,
    UNREADABLE_IMAGE,
)

# 8K x 8K: well above any VLM's useful resolution, well below a bomb's memory. PIL's own guard (89 Mpx warns,
# 179 Mpx raises) is replaced by this explicit, reasoned check.
DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192
_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}


class ImageError(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass
class LoadedImage:
    """An image decoded to RGB. `unchanged` is True when the source bytes already are that exact RGB image
    (an RGB JPEG/PNG without EXIF rotation), so they can be copied verbatim instead of re-encoded."""

    image: Any  # PIL.Image.Image, mode RGB
    format: str  # sniffed container format ("JPEG", "PNG", ...)
    unchanged: bool


def extension(fmt: str) -> str:
    """The file extension matching a sniffed PIL format (".png" for anything unusual)."""
    return _EXTENSIONS.get(fmt, ".png")


def read_bytes(source: Union[Path, bytes]) -> bytes:
    """The encoded bytes of a file or bytes source, with missing/empty files turned into ImageErrors."""
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError:
            raise ImageError(MISSING_IMAGE, f"{source} does not exist: check --images / the image folder")
        except (IsADirectoryError, PermissionError) as exc:
            raise ImageError(UNREADABLE_IMAGE, f"{source}: {exc}")
    if not data:
        raise ImageError(EMPTY_IMAGE_FILE, f"{source if not isinstance(source, bytes) else 'image bytes'} is "
                                           "zero bytes: re-download or drop the file")
    return data


def source_name(image: Any) -> str:
    """How an image input of LLaMA-Factory's mm_plugin (path, bytes, {"bytes", "path"}, file, PIL image) is named."""
    if isinstance(image, (str, Path)):
        return str(image)
    if isinstance(image, dict):
        return str(image.get("path") or "embedded image bytes")
    if isinstance(image, (bytes, bytearray)):
        return "image bytes"
    return str(getattr(image, "filename", "") or getattr(image, "name", "") or type(image).__name__)


def classify(exc: BaseException, what: str, source: Any = None) -> ImageError:
    """The ImageError (reason, detail with the fix) for an exception Pillow raised while opening or decoding."""
    from PIL import Image

    message = str(exc).rstrip(".")
    if isinstance(exc, FileNotFoundError):
        return ImageError(MISSING_IMAGE, f"{what} does not exist: check the path (relative paths resolve against "
                                         "media_dir, by default the dataset dir)")
    if isinstance(source, (str, Path)) and Path(source).is_file() and Path(source).stat().st_size == 0:
        return ImageError(EMPTY_IMAGE_FILE, f"{what} is zero bytes: re-download or drop the file")
    if isinstance(exc, Image.DecompressionBombError):
        return ImageError(IMAGE_TOO_LARGE, f"{what}: {message}: downscale it first")
    if isinstance(exc, OSError) and ("truncated" in message or "broken data stream" in message):
        return ImageError(TRUNCATED_IMAGE, f"{what}: {message}: re-download or re-export the file, or drop it")
    return ImageError(UNREADABLE_IMAGE, f"{what}: {type(exc).__name__}: {message}: re-download or re-export the file "
                                        "(PNG or JPEG), or drop it")


def load_rgb(source: Union[Path, bytes, Any], *, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> LoadedImage:
    """Decode `source` (path, encoded bytes or a PIL image) to RGB, or raise ImageError with a reason."""
    from PIL import Image

    if isinstance(source, Image.Image):
        return LoadedImage(model_image(source).convert("RGB"), "PNG", unchanged=False)
    what = "image bytes" if isinstance(source, (bytes, bytearray)) else str(source)
    data = read_bytes(source)
    with warnings.catch_warnings():
        # Our own size check below replaces PIL's DecompressionBombWarning/Error.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            img = Image.open(io.BytesIO(data))
            width, height = img.size  # header only: nothing decoded yet
            if width * height > max_image_pixels:
                raise ImageError(IMAGE_TOO_LARGE, f"{what} is {width}x{height} = {width * height} pixels, above the "
                                                  f"{max_image_pixels} limit: downscale it first")
            fmt = img.format or "PNG"
            unchanged = img.mode == "RGB" and fmt in ("JPEG", "PNG") and _orientation(img) == 1
            rgb = model_image(img).convert("RGB")
        except ImageError:
            raise
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
            raise classify(exc, what) from exc
        finally:
            Image.MAX_IMAGE_PIXELS = previous
    return LoadedImage(rgb, fmt, unchanged)


# Modes whose samples exceed 8 bits: Pillow's convert("RGB") clips them at 255 (white) instead of scaling.
HIGH_BIT_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
# Image.info key under which `model_image` records a lossy rescale, for `vlmr validate` to report
# (Pillow copies `info` through convert() and resize(), so it survives LLaMA-Factory's own preprocessing).
RESCALED_KEY = "vlmr_rescaled_from"


def _orientation(img: Any) -> int:
    return img.getexif().get(0x0112, 1)  # EXIF Orientation tag; 1 = as stored


def model_image(img: Any) -> Any:
    """The image as the model should see it, in a mode Pillow converts to RGB without loss of content.

    First frame of an animation, EXIF orientation applied, high-bit-depth greys rescaled to 8 bits by their
    own range (recorded in `info[RESCALED_KEY]` as "MODE lo..hi"), transparency composited on white.
    """
    from PIL import Image, ImageOps

    img.seek(0)  # animated GIF/WebP/APNG: the first frame, whatever frame a caller left it at
    # Decode now: Pillow decodes lazily, and an 8-bit RGB image that needs no resize would otherwise be decoded
    # first inside transformers' image processor, where a truncated file fails without its name.
    img.load()
    if _orientation(img) != 1:
        img = ImageOps.exif_transpose(img)
    if img.mode in HIGH_BIT_DEPTH_MODES:
        grey, (low, high) = rescale_to_8bit(img)
        rescaled = Image.fromarray(grey)  # (H, W) uint8 -> mode L
        rescaled.info[RESCALED_KEY] = f"{img.mode} {low:g}..{high:g}"
        return rescaled
    if img.mode in ALPHA_MODES or "transparency" in img.info:  # "transparency": a palette or tRNS colour key
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img


def rescale_to_8bit(img: Any) -> tuple[Any, tuple[float, float]]:
    """(H, W) uint8 array of a 16/32-bit integer or float grey image, its finite min -> 0 and max -> 255
    (linear, rounded); NaN and infinities -> 0; a uniform image -> 0. Also returns (min, max)."""
    import numpy as np

    values = np.asarray(img, dtype=np.float64)  # (H, W); I;16B's big-endian samples read by value
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, np.uint8), (0.0, 0.0)
    low, high = float(values[finite].min()), float(values[finite].max())
    scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return np.rint(np.where(finite, scaled, 0.0)).astype(np.uint8), (low, high)


def resize_to_max_pixels(img: Any, max_pixels: int) -> Any:
    """Downscale keeping the aspect ratio so width x height <= max_pixels (LLaMA-Factory's `image_max_pixels`
    rule in `mm_plugin._preprocess_image`: factor sqrt(max_pixels / (w * h)))."""
    width, height = img.size
    if width * height <= max_pixels:
        return img
    factor = (max_pixels / (width * height)) ** 0.5
    size = (max(1, int(width * factor)), max(1, int(height * factor)))
    from PIL import Image

    return img.resize(size, Image.Resampling.BICUBIC)
