"""Every Pillow mode a user's image file can have: `vlmr validate` checks what LLaMA-Factory feeds the model.

Each case is a real file written by Pillow in a format that stores the mode (a 0..60000 ramp for 16-bit, so
clipping shows), except where no Pillow format can: YCbCr and HSV exist only as in-memory images (JPEG and WebP
store them as RGB; LLaMA-Factory also accepts PIL images), and Pillow cannot write 16-bit RGB, so those two
files are encoded here by the PNG and TIFF specifications (Pillow reads them as 8-bit RGB from each
sample's high byte). What Pillow reads back is part of the table: a 16-bit PNG always reads as `I;16` (also
when written from `I;16B`), a little-endian `I;16L` TIFF as `I;16`, a big-endian `I;16B` TIFF as `I;16B`.

For every case: LLaMA-Factory's patched loader (the qwen2_vl template's `_regularize_images`), `vlmr validate`'s
decoder and the converters' `load_rgb` give the same pixels, and the model sees a non-degenerate image; the
16/32-bit cases are reported by validate as rescaled (file:line and the fix). With the patch removed
(upstream), the 16-bit and float cases are clipped to white or black and the EXIF photo stays sideways;
validate on the upstream loader (what training uses when the plugin is not loaded) reports each clipped image
as a `clipped_image` error with file:line.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli
from PIL import Image

from vlmrecipes.data_converters.images import load_rgb
from vlmrecipes.data_converters.validate import DatasetFile, ImageChecker, check_dataset, resolve
from vlmrecipes.plugins import registry

WIDTH, HEIGHT = 48, 32  # non-square (a transposition shows) and above Qwen2-VL's 28-pixel and 32x32 minimums
RAMP16 = (np.arange(WIDTH * HEIGHT).reshape(HEIGHT, WIDTH) * 60000 // (WIDTH * HEIGHT - 1)).astype(np.uint16)
RAMP8 = (RAMP16 >> 8).astype(np.uint8)  # (H, W) 0..234
HIGH_BIT_DEPTH = {"I_tiff", "I16_png", "I16B_tiff", "I16B_png", "I16L_tiff", "F_tiff"}


def _rgb8() -> Image.Image:
    """(H, W, 3): red ramps left to right, green top to bottom, blue constant."""
    x, y = np.meshgrid(np.linspace(0, 255, WIDTH), np.linspace(0, 255, HEIGHT))
    return Image.fromarray(np.stack([x, y, np.full_like(x, 90)], -1).astype(np.uint8))


def _with_alpha(mode: str) -> Image.Image:
    """The RGB ramp as "LA", "PA" or "RGBA", opacity rising from 40 to 255 left to right."""
    image = _rgb8().convert({"LA": "L", "PA": "P", "RGBA": "RGB"}[mode]).convert(mode)
    image.putalpha(Image.fromarray(np.tile(np.linspace(40, 255, WIDTH), (HEIGHT, 1)).astype(np.uint8)))
    return image


def _png_rgb16(path: Path, rgb: np.ndarray) -> None:
    """A 16-bit RGB PNG (colour type 2, bit depth 16, one unfiltered scanline per row), per the PNG spec."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in rgb)  # (H, W, 3) big-endian samples
    header = struct.pack(">IIBBBBB", rgb.shape[1], rgb.shape[0], 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def _tiff_rgb16(path: Path, rgb: np.ndarray) -> None:
    """A 16-bit RGB baseline TIFF (little-endian, one uncompressed strip, chunky), per TIFF 6.0."""
    pixels = rgb.astype("<u2").tobytes()
    bits_at = 8 + 2 + 12 * 10 + 4  # header, entry count, 10 entries, next-IFD offset
    entries = [(256, 3, 1, rgb.shape[1]), (257, 3, 1, rgb.shape[0]), (258, 3, 3, bits_at), (259, 3, 1, 1),
               (262, 3, 1, 2), (273, 4, 1, bits_at + 6), (277, 3, 1, 3), (278, 3, 1, rgb.shape[0]),
               (279, 4, 1, len(pixels)), (284, 3, 1, 1)]  # width, height, bits, no compression, RGB, strip...
    ifd = b"".join(struct.pack("<HHI", tag, kind, count) + (struct.pack("<HH", value, 0) if kind == 3 and count == 1
                                                              else struct.pack("<I", value))
                   for tag, kind, count, value in entries)
    path.write_bytes(b"II*\0" + struct.pack("<IH", 8, len(entries)) + ifd + struct.pack("<I", 0)
                     + struct.pack("<HHH", 16, 16, 16) + pixels)


def _rgb16() -> np.ndarray:
    """(H, W, 3) uint16: the 16-bit ramp in red, its mirror in green, 1000 in blue."""
    return np.stack([RAMP16, RAMP16[:, ::-1], np.full_like(RAMP16, 1000)], -1)


def _animation(path: Path, fmt: str) -> None:
    """Three frames; the first is the RGB ramp, the others solid colours a wrong frame would show."""
    frames = [_rgb8(), Image.new("RGB", (WIDTH, HEIGHT), "red"), Image.new("RGB", (WIDTH, HEIGHT), "blue")]
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:], duration=80, loop=0,
                   **({"lossless": True} if fmt == "WEBP" else {}))


def _exif_rotated(path: Path) -> None:
    """Stored 48x32 (landscape) with EXIF orientation 6: viewers and the model should show it 32x48."""
    exif = Image.Exif()
    exif[0x0112] = 6
    _rgb8().save(path, "JPEG", quality=95, exif=exif.tobytes())


# case id (mode written, format) -> writer(path); None: no format stores it. Mode read back: EXPECTED_MODE_READ
CASES = {
    "1_png": lambda p: Image.fromarray(RAMP8 > 117).save(p, "PNG"),
    "L_png": lambda p: Image.fromarray(RAMP8).save(p, "PNG"),
    "LA_png": lambda p: _with_alpha("LA").save(p, "PNG"),
    "P_png": lambda p: _rgb8().quantize(64).save(p, "PNG"),
    "P_transparent_gif": lambda p: _rgb8().quantize(64).save(p, "GIF", transparency=0),
    "PA_tiff": lambda p: _with_alpha("PA").save(p, "TIFF"),
    "RGB_jpeg": lambda p: _rgb8().save(p, "JPEG", quality=95),
    "RGBA_png": lambda p: _with_alpha("RGBA").save(p, "PNG"),
    "CMYK_jpeg": lambda p: _rgb8().convert("CMYK").save(p, "JPEG", quality=95),
    "CMYK_tiff": lambda p: _rgb8().convert("CMYK").save(p, "TIFF"),
    "YCbCr_memory": None,
    "LAB_tiff": lambda p: _rgb8().convert("LAB").save(p, "TIFF"),
    "HSV_memory": None,
    "I_tiff": lambda p: Image.fromarray(RAMP16.astype(np.int32) * 1000 - 20_000_000).save(p, "TIFF"),
    "I16_png": lambda p: Image.fromarray(RAMP16).save(p, "PNG"),
    "I16B_tiff": lambda p: Image.frombytes("I;16B", (WIDTH, HEIGHT), RAMP16.astype(">u2").tobytes()).save(p, "TIFF"),
    "I16B_png": lambda p: Image.frombytes("I;16B", (WIDTH, HEIGHT), RAMP16.astype(">u2").tobytes()).save(p, "PNG"),
    "I16L_tiff": lambda p: Image.frombytes("I;16L", (WIDTH, HEIGHT), RAMP16.astype("<u2").tobytes()).save(p, "TIFF"),
    "F_tiff": lambda p: Image.fromarray(RAMP16.astype(np.float32) / 60000).save(p, "TIFF"),
    "RGB16_png": lambda p: _png_rgb16(p, _rgb16()),
    "RGB16_tiff": lambda p: _tiff_rgb16(p, _rgb16()),
    "exif6_jpeg": _exif_rotated,
    "animated_gif": lambda p: _animation(p, "GIF"),
    "animated_webp": lambda p: _animation(p, "WEBP"),
}
IN_MEMORY = {"YCbCr_memory": "YCbCr", "HSV_memory": "HSV"}
EXPECTED_MODE_READ = {
    "1_png": "1", "L_png": "L", "LA_png": "LA", "P_png": "P", "P_transparent_gif": "P", "PA_tiff": "PA",
    "RGB_jpeg": "RGB", "RGBA_png": "RGBA", "CMYK_jpeg": "CMYK", "CMYK_tiff": "CMYK", "YCbCr_memory": "YCbCr",
    "LAB_tiff": "LAB", "HSV_memory": "HSV", "I_tiff": "I", "I16_png": "I;16",
    "I16B_tiff": "I;16B", "I16B_png": "I;16", "I16L_tiff": "I;16", "F_tiff": "F", "RGB16_png": "RGB",
    "RGB16_tiff": "RGB", "exif6_jpeg": "RGB", "animated_gif": "P", "animated_webp": "RGB",
}
SUFFIX = {"png": ".png", "tiff": ".tif", "jpeg": ".jpg", "gif": ".gif", "webp": ".webp"}


def _source(case: str, folder: Path):
    """The file written for `case` (a str path, as datasets hold), or the in-memory image."""
    if case in IN_MEMORY:
        return _rgb8().convert(IN_MEMORY[case])
    path = folder / f"{case}{SUFFIX[case.rsplit('_', 1)[1]]}"
    if not path.exists():
        CASES[case](path)
    return str(path)


def _white_black(image: Image.Image) -> tuple[float, float]:
    """The shares of pure white and of pure black pixels."""
    pixels = np.asarray(image.convert("RGB"))  # (H, W, 3)
    return float((pixels == 255).all(-1).mean()), float((pixels == 0).all(-1).mean())


@pytest.fixture(scope="module")
def plugin():
    """The qwen2_vl template's mm_plugin (Qwen2VLPlugin: its own `_preprocess_image`), with our patch."""
    from llamafactory.data import mm_plugin
    from llamafactory.data.template import TEMPLATES

    registry.apply_patch("llamafactory.data.mm_plugin")
    assert mm_plugin._vlmr_patched
    return TEMPLATES["qwen2_vl"].mm_plugin


@pytest.fixture
def upstream(monkeypatch):
    """LLaMA-Factory's own `_preprocess_image` / `_regularize_images` restored for the duration of a test."""
    from llamafactory.data.mm_plugin import MMPluginMixin

    for name in ("_preprocess_image", "_regularize_images"):
        monkeypatch.setattr(MMPluginMixin, name, getattr(MMPluginMixin, name).__wrapped__)


LIMITS = {"image_max_pixels": 768 * 768, "image_min_pixels": 32 * 32}  # LLaMA-Factory's defaults


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("modes")


@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_and_converters_see_what_llamafactory_feeds(case, folder, plugin):
    source = _source(case, folder)
    if isinstance(source, str):
        with Image.open(source) as stored:
            assert stored.mode == EXPECTED_MODE_READ[case]
    fed = plugin._regularize_images([source], **LIMITS)["images"][0]
    checked = ImageChecker({"template": "qwen2_vl"}).decode(source)
    converted = load_rgb(source if not isinstance(source, str) else Path(source)).image
    assert fed.mode == checked.mode == converted.mode == "RGB"
    assert np.array_equal(np.asarray(fed), np.asarray(checked))
    assert np.array_equal(np.asarray(fed), np.asarray(converted))  # 48x32: LLaMA-Factory resizes nothing
    assert max(_white_black(fed)) < 0.99  # not one flat colour
    assert fed.size == ((HEIGHT, WIDTH) if case == "exif6_jpeg" else (WIDTH, HEIGHT))
    if case.startswith("animated"):  # the first frame: the ramp, not the red or blue frames
        assert np.abs(np.asarray(fed, dtype=int) - np.asarray(_rgb8(), dtype=int)).mean() < 4
    if case in HIGH_BIT_DEPTH:  # rescaled by the image's own range, recorded for validate's warning
        assert fed.info["vlmr_rescaled_from"].startswith(EXPECTED_MODE_READ[case] + " ")
        assert np.asarray(fed)[..., 0].min() == 0 and np.asarray(fed)[..., 0].max() == 255


def test_validate_decodes_with_the_recipes_template_and_pixel_limits(folder, plugin):
    """48x32 at image_max_pixels 784 -> 34x22; Qwen2VLPlugin then raises the short side to its 28-pixel minimum."""
    source = _source("RGB_jpeg", folder)
    limits = {"image_max_pixels": 28 * 28, "image_min_pixels": 0}
    fed = plugin._regularize_images([source], **limits)["images"][0]
    checked = ImageChecker({"template": "qwen2_vl", **limits}).decode(source)
    assert fed.size == checked.size == (34, 28) and np.array_equal(np.asarray(fed), np.asarray(checked))
    assert ImageChecker(limits).decode(source).size == (34, 22)  # no template: LLaMA-Factory's base plugin

def test_upstream_clips_high_bit_depth_and_ignores_exif(tmp_path, plugin, upstream):
    shares = {case: _white_black(plugin._regularize_images([_source(case, tmp_path)], **LIMITS)["images"][0])
              for case in sorted(HIGH_BIT_DEPTH)}
    assert shares["I16_png"][0] > 0.995  # the 0..60000 ramp: 99.5% pure white
    assert shares["F_tiff"][1] > 0.99  # the 0..1 float ramp: black
    assert all(sum(share) > 0.99 for share in shares.values()), shares  # every pixel saturated (I: -2e7..4e7)
    sideways = plugin._regularize_images([_source("exif6_jpeg", tmp_path)], **LIMITS)["images"][0]
    assert sideways.size == (WIDTH, HEIGHT)


def _modes_dataset(folder: Path) -> tuple[Path, dict[str, int]]:
    """A dataset with one record per file case; (its path, case -> line)."""
    files = [case for case in sorted(CASES) if case not in IN_MEMORY]
    records = [{"messages": [{"role": "user", "content": "<image>What is shown?"},
                             {"role": "assistant", "content": case}],
                "images": [Path(_source(case, folder)).name]} for case in files]
    dataset = folder / "modes.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in records))
    return dataset, {case: index + 1 for index, case in enumerate(files)}


def test_validate_reports_rescaled_images(tmp_path):
    dataset, line_of = _modes_dataset(tmp_path)
    patched = run_cli(["vlmr", "validate", str(dataset), "--dataset-dir", str(tmp_path)])
    warned = {line.split(":")[1] for line in patched.stdout.splitlines() if ": warning: " in line}
    assert warned == {str(line_of[case]) for case in HIGH_BIT_DEPTH}, patched.stdout
    assert f"{dataset}:{line_of['I16_png']}: warning: I16_png.png: I;16 image (values 0..60000) rescaled" in \
        patched.stdout and "`vlmr convert ct`" in patched.stdout
    assert patched.stdout.splitlines()[-1] == f"{dataset}: {len(line_of)} records, 0 errors, {len(warned)} warnings"


def test_validate_without_the_plugin_reports_clipped_images(tmp_path, plugin, upstream):
    """The upstream loader (what training uses when the plugin is not loaded): validate errors name file:line."""
    dataset, line_of = _modes_dataset(tmp_path)
    report = check_dataset(DatasetFile(dataset), tmp_path, False, ImageChecker())
    assert {line.split(":")[1] for line in report.errors} == {str(line_of[case]) for case in HIGH_BIT_DEPTH}
    assert all(": clipped_image: " in line for line in report.errors) and not report.warnings
    ramp = next(line for line in report.errors if line.startswith(f"{dataset}:{line_of['I16_png']}: "))
    assert ramp.startswith(f"{dataset}:{line_of['I16_png']}: clipped_image: I16_png.png: LLaMA-Factory clips the "
                           "samples of this I;16 image to 0..255 (99.5% of the pixels pure white"), ramp
    assert "`vlmr doctor`" in report.errors[0]



def test_image_folder_of_16bit_scans_copy_writes_8bit_reference_is_rescaled_by_the_loader(tmp_path, plugin):
    for folder, ramp in (("ct", RAMP16), ("xray", RAMP16[::-1])):
        (tmp_path / "raw" / folder).mkdir(parents=True)
        Image.fromarray(np.ascontiguousarray(ramp)).save(tmp_path / "raw" / folder / "scan.png")
    dataset_dir = tmp_path / "datasets"
    convert = ["vlmr", "convert", "image-folder", "--input", str(tmp_path / "raw"), "--dataset-dir", str(dataset_dir)]
    run_cli([*convert, "--name", "copied"])
    for folder in ("ct", "xray"):
        written = Image.open(dataset_dir / "copied" / "media" / folder / "scan.png")
        assert written.mode == "RGB"  # 8 bits per sample
        source = str(tmp_path / "raw" / folder / "scan.png")
        loaded = plugin._regularize_images([source], **LIMITS)["images"][0]
        assert np.array_equal(np.asarray(written), np.asarray(loaded))

    run_cli([*convert, "--name", "referenced", "--media", "reference"])
    train = dataset_dir / "referenced" / "train.jsonl"
    report = check_dataset(resolve("referenced_train", dataset_dir), dataset_dir, True, ImageChecker())
    assert not report.errors
    assert report.warnings == [f"{train}:{line}: warning: {tmp_path / 'raw' / folder / 'scan.png'}: I;16 image "
                               "(values 0..60000) rescaled by its own range to 8 bits for the model, so its contrast "
                               "depends on each image's min and max: for a calibrated window (CT: Hounsfield units) "
                               "window it to 8 bits yourself or use `vlmr convert ct`"
                               for line, folder in ((1, "ct"), (2, "xray"))]
