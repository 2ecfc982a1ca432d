"""`data_converters.images.load_rgb` on every awkward image a raw dataset holds: converted to RGB or skipped."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from vlmrecipes.data_converters.images import ImageError, load_rgb


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_truncated_and_empty_and_garbage(tmp_path):
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = _encode(noisy, "JPEG")
    with pytest.raises(ImageError) as err:
        load_rgb(data[: len(data) // 2])
    assert err.value.reason == "truncated_image"
    (tmp_path / "zero.jpg").write_bytes(b"")
    with pytest.raises(ImageError) as err:
        load_rgb(tmp_path / "zero.jpg")
    assert err.value.reason == "empty_image_file" and "zero.jpg" in err.value.detail
    with pytest.raises(ImageError) as err:
        load_rgb(b"<html>not found</html>")
    assert err.value.reason == "unreadable_image"
    with pytest.raises(ImageError) as err:
        load_rgb(tmp_path / "nope.jpg")
    assert err.value.reason == "missing_image"


def test_wrong_extension_is_sniffed(tmp_path):
    (tmp_path / "photo.png").write_bytes(_encode(Image.new("RGB", (8, 8), "red"), "JPEG"))
    loaded = load_rgb(tmp_path / "photo.png")
    assert loaded.format == "JPEG" and loaded.unchanged


def test_cmyk_palette_transparency_and_grey_alpha():
    cmyk = load_rgb(_encode(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "JPEG"))
    assert cmyk.image.mode == "RGB" and not cmyk.unchanged
    r, g, b = cmyk.image.getpixel((1, 1))
    assert r > 200 and g < 60 and b < 60  # cyan/magenta/yellow/black (0, 255, 255, 0) is red
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    palette.putpixel((0, 0), 0)
    loaded = load_rgb(_encode(palette, "PNG", transparency=0))
    assert loaded.image.getpixel((0, 0)) == (255, 255, 255)  # transparent -> white, not black
    assert loaded.image.getpixel((1, 1)) == (10, 200, 10)
    la = load_rgb(_encode(Image.new("LA", (2, 2), (0, 0)), "PNG"))
    assert la.image.getpixel((0, 0)) == (255, 255, 255)


def test_16bit_grayscale_rescaled_to_8bit():
    grey = np.array([[0, 257 * 100], [65535, 30000]], dtype=np.uint16)
    loaded = load_rgb(_encode(Image.fromarray(grey), "PNG"))
    assert loaded.image.mode == "RGB"
    assert [loaded.image.getpixel(xy)[0] for xy in ((0, 0), (1, 0), (0, 1), (1, 1))] == [0, 100, 255, 117]


def test_exif_rotation_applied():
    img = Image.new("RGB", (40, 20), "blue")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    loaded = load_rgb(_encode(img, "JPEG", exif=exif.tobytes()))
    assert loaded.image.size == (20, 40) and not loaded.unchanged


def test_decompression_bomb_guard():
    big = _encode(Image.new("L", (3000, 3000)), "PNG")  # 9 Mpx, compresses to a few KB
    with pytest.raises(ImageError) as err:
        load_rgb(big, max_image_pixels=4_000_000)
    assert err.value.reason == "image_too_large" and "3000x3000" in err.value.detail
    assert load_rgb(big).image.size == (3000, 3000)


def test_animated_gif_first_frame():
    frames = [Image.new("P", (6, 6), i) for i in range(3)]
    for frame in frames:
        frame.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50)
    loaded = load_rgb(buffer.getvalue())
    assert loaded.format == "GIF" and loaded.image.getpixel((0, 0)) == (0, 0, 0)
