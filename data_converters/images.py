"""Robust image loading to 8-bit RGB, shared by the writer and by `vlmr validate`.

Every failure is an `ImageError(reason, detail)` with a reason from `schema` (never a bare PIL exception), so
a bad image becomes one line of the skip report instead of a crash hours into training. What is handled:

- zero-byte file -> `empty_image_file`; missing file -> `missing_image`;
- truncated JPEG/PNG -> `truncated_image` (PIL's LOAD_TRUNCATED_IMAGES stays off: grey-filled halves of
  images are worse than a skipped record);
- decompression bombs: width x height above `max_image_pixels` -> `image_too_large`, checked from the
  header before any pixel is decoded;
- wrong file extension: the format is sniffed from the bytes; `extension()` gives the right one;
- EXIF orientation is applied (the pixels are rotated as a viewer shows them; processors ignore EXIF);
- animated GIF/WebP/APNG: the first frame;
- CMYK, YCbCr, LAB -> RGB; palette (with or without transparency), LA, RGBA -> composited on white;
- 16-bit grayscale (`I;16*`, `I`) -> 8-bit by the PNG sample-depth scaling (value * 255 / 65535);
  32-bit float `F` -> clipped to [0, 255].
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


def load_rgb(source: Union[Path, bytes, Any], *, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> LoadedImage:
    """Decode `source` (path, encoded bytes or a PIL image) to RGB, or raise ImageError with a reason."""
    from PIL import Image, ImageOps

    if isinstance(source, Image.Image):
        return LoadedImage(_to_rgb(source), "PNG", unchanged=False)
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
            img.seek(0)  # animated formats: the first frame
            img.load()
        except ImageError:
            raise
        except OSError as exc:
            reason = TRUNCATED_IMAGE if "truncated" in str(exc) or "broken data stream" in str(exc) else UNREADABLE_IMAGE
            raise ImageError(reason, f"{what}: {exc}: re-download or drop the file")
        except (ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise ImageError(UNREADABLE_IMAGE, f"{what}: {exc}: re-download or drop the file")
        finally:
            Image.MAX_IMAGE_PIXELS = previous
    orientation = img.getexif().get(0x0112, 1)  # EXIF Orientation tag; 1 = as stored
    unchanged = img.mode == "RGB" and fmt in ("JPEG", "PNG") and orientation == 1
    if orientation != 1:
        img = ImageOps.exif_transpose(img)
    return LoadedImage(_to_rgb(img), fmt, unchanged)


def _to_rgb(img: Any) -> Any:
    """Any PIL mode -> RGB: transparency composited on white, 16/32-bit greys rescaled to 8 bits."""
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        import numpy as np

        # (H, W) integers; "I" is how PIL opens 16-bit PNGs; PNG scales samples to the full bit depth.
        grey = np.asarray(img, dtype=np.float64) * (255.0 / 65535.0)
        return Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8)).convert("RGB")  # (H, W) uint8 -> L
    if img.mode == "F":
        import numpy as np

        grey = np.clip(np.rint(np.asarray(img, dtype=np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB


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
