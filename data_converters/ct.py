"""CT volumes -> windowed PNG slices: DICOM series (pydicom) and NIfTI files (nibabel), de-identified.

Raw layouts: `--input` is a folder (searched recursively; hidden files such as .DS_Store are ignored), one DICOM
file, or one `.nii`/`.nii.gz` file. Every file ends up as records or in `<split>.skipped.json` with its reason:

- DICOM: one file per slice, e.g. `study/series1/IM0001.dcm`, grouped into volumes by SeriesInstanceUID
  (0020,000E), so several series in one folder stay separate volumes. Policy skips (`filtered`): DICOM files
  without an image (RTSTRUCT, RTPLAN, SR, DICOMDIR), non-CT series, localizer/scout images (ImageType (0008,0008)
  holding LOCALIZER, or a series whose slices do not share one orientation). Errors: a truncated file
  (`truncated_image`: re-export or re-copy it), compressed pixel data no installed decoder reads or a
  multi-frame file (`unreadable_image`), a file that is not DICOM (`malformed_record`).
- NIfTI: one 3D volume per file (or 4D with one volume), in HU once the header's scl_slope/scl_inter are
  applied, which is how dcm2niix writes CT. dcm2niix's JSON sidecar (same name, `.json`) is skipped as metadata.
- Both in one folder, dcm2niix's default layout (its `.nii.gz` beside the DICOMs it came from, so usually the
  same series twice): `--prefer dicom` (default) converts the DICOM slices and lists that folder's NIfTI files
  as skipped, `--prefer nifti` the reverse, `--prefer both` converts both as separate volumes. DICOM is the
  default because only its per-slice headers tell localizers apart and keep series separate.

Hounsfield units: pydicom's `apply_modality_lut` (PS3.3 C.11.1: HU = stored x RescaleSlope (0028,1053) +
RescaleIntercept (0028,1052), or a Modality LUT Sequence). Windowing: a window of width W centred on level L
clips HU to [L - W/2, L + W/2] and maps it linearly to 0..255, rounded half to even: the textbook presets'
definition, which is DICOM's LINEAR_EXACT VOI function (C.11.2.1.3.2) onto an 8-bit output. One window
gives a grey image; three windows (e.g. `brain,subdural,bone`) become the R, G, B channels.

Plane and slice order come from the geometry. The slice normal is the cross product of the two
ImageOrientationPatient (0020,0037) direction cosines (DICOM) or the affine's direction of the slice axis, the
header's slice dimension or else the third voxel axis (NIfTI). The patient axis closest to the normal names the
plane (left-right: sagittal, anterior-posterior: coronal, inferior-superior: axial); more than
OBLIQUE_DEGREES from every axis it is oblique; without geometry the label names no plane. Slice 0 is the most
right (sagittal), anterior (coronal) or inferior (axial) slice: DICOM by ImagePositionPatient (0020,0032)
projected on the normal, by InstanceNumber (0020,0013) when positions are missing, then by file name. DICOM
pixels are shown as stored; NIfTI slices as scanners store DICOM by default: axial with anterior at the top
and the patient's right on the image's left, coronal and sagittal with superior at the top and the patient's
right (coronal) or anterior (sagittal) on the left. NIfTI slices are read lazily, one in memory at a time, in
storage order (a gzip stream only reads forward cheaply), so a volume stored superior to inferior yields its
records in that order, each with its `slice` number as above.

De-identification: nothing read from a file header other than pixels, rescale values and geometry reaches
the output. Series are named by a salted hash, HMAC-SHA256(salt, SeriesInstanceUID or file path relative to
`--input`) cut to 16 hex digits; the salt is `--salt`, else $VLMR_CT_SALT, else a random per-user secret
created once in ~/.config/vlmrecipes/ct_salt (so a rerun gives the same names and the output alone cannot be
linked back to UIDs). PNGs carry no text chunks. Skip-report details name files by their path relative to
`--input`: rename folders named after patients before converting.

Records: the slices of a volume are numbered over those converted, i.e. without the unreadable slices (listed
in the skip report) and localizers; `--every N` keeps every N-th of them, with their numbers. Without
`--captions` the pair is "Describe this CT slice." -> "Axial CT slice 12 of 40, lung window." (a plane,
position and window target for alignment). With `--captions FILE.csv` (columns `series`, `answer`, optional
`question` and `slice`; `series` is the SeriesInstanceUID, the series folder relative to `--input`, or the
NIfTI file name), each row becomes one sample: on its `slice` (0-based, in the order above) or, when blank,
on every selected slice; series without a row are policy skips. One record, with the fields kept for
evaluation (`plane` is "unknown" without geometry):

    {"id": "3f2a9c0d1e4b5a69-0012", "messages": [{"role": "user", "content": "<image>Describe this CT slice."},
     {"role": "assistant", "content": "Axial CT slice 13 of 40, lung window."}],
     "images": ["ct/media/3f2a9c0d1e4b5a69/0012.png"], "series": "3f2a9c0d1e4b5a69", "slice": 12,
     "slices": 40, "plane": "axial", "window": "lung"}
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import secrets
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlmrecipes.data_converters.readers import SourceError, iter_csv
from vlmrecipes.data_converters.schema import (
    EMPTY_TURN,
    FILTERED,
    MALFORMED,
    TRUNCATED_IMAGE,
    UNREADABLE_IMAGE,
    ImageRef,
    Record,
    Sample,
    Skipped,
    chat,
)

DEFAULT_NAME = "ct"
PROMPT = "Describe this CT slice."
ANSWER = "{plane}CT slice {number} of {count}, {window} window."

# Window presets as (width, level) in HU: the usual radiology reading windows.
WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (80, 40),
    "subdural": (200, 75),
    "stroke": (40, 40),
    "lung": (1500, -600),
    "mediastinum": (350, 50),
    "abdomen": (400, 50),
    "liver": (150, 30),
    "bone": (1800, 400),
}
NIFTI_SUFFIXES = (".nii", ".nii.gz")
SALT_FILE = Path("~/.config/vlmrecipes/ct_salt")
PREFER = ("dicom", "nifti", "both")  # --prefer: which copy of a folder holding both DICOM slices and NIfTI

# Planes by the patient axis their normal runs along (x: right-left, y: anterior-posterior, z: inferior-superior,
# the same axes in DICOM's LPS and NIfTI's RAS coordinates).
PLANES = ("sagittal", "coronal", "axial")
# A normal further than this from every patient axis is oblique. Gantry-tilted head CT (tilts up to about 30
# degrees, stored in ImageOrientationPatient by most scanners) stays axial, as it is read.
OBLIQUE_DEGREES = 30.0
# Slices of one volume share their orientation up to the rounding of the header's decimal strings.
SAME_ORIENTATION_DEGREES = 1.0


@dataclass(frozen=True)
class Window:
    """A display window: `name` is a preset name or "W/L" for a custom one."""

    name: str
    width: float
    level: float


def parse_windows(text: str) -> list[Window]:
    """"lung" -> one window; "brain,subdural,bone" -> three (RGB); "400/40" -> a custom width/level."""
    windows = []
    for item in (part.strip() for part in text.split(",")):
        if item in WINDOWS:
            windows.append(Window(item, *WINDOWS[item]))
            continue
        try:
            width, level = (float(v) for v in item.split("/"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"window {item!r}: use a preset ({', '.join(WINDOWS)}) or WIDTH/LEVEL")
        if width <= 0:
            raise argparse.ArgumentTypeError(f"window {item!r}: the width must be positive")
        windows.append(Window(item, width, level))
    if len(windows) not in (1, 3):
        raise argparse.ArgumentTypeError(f"{len(windows)} windows given: use one (grey) or three (R,G,B)")
    return windows


def apply_window(hu: np.ndarray, width: float, level: float) -> np.ndarray:
    """Clip HU to [level - width/2, level + width/2] and scale linearly to uint8 0..255 (rounded half to even).

    This is DICOM's LINEAR_EXACT VOI function onto an 8-bit output, i.e. pydicom's `apply_windowing` given a
    display dataset with that window (tests/test_ct.py checks they agree up to exact x.5 ties, where pydicom's
    float arithmetic rounds either way); pydicom's boolean-mask version takes 11 ms for a 512 x 512 slice, this
    one 1.6 ms, per window.
    """
    low = level - width / 2
    scaled = (np.clip(hu, low, low + width) - low) * 255.0 / width  # multiply first: integer HU ties stay exact
    return np.rint(scaled).astype(np.uint8)


def render(hu: np.ndarray, windows: list[Window]) -> Any:
    """A (H, W) HU slice -> a PIL image: grey for one window, RGB with one window per channel for three."""
    from PIL import Image

    channels = [apply_window(hu, w.width, w.level) for w in windows]  # each (H, W) uint8
    if len(channels) == 1:
        return Image.fromarray(channels[0])  # (H, W) uint8 -> mode L
    return Image.fromarray(np.stack(channels, axis=-1))  # (H, W, 3) uint8 -> mode RGB


def plane_of(normal: Any) -> str:
    """"sagittal" | "coronal" | "axial" | "oblique" for a slice normal (3 values) in patient coordinates."""
    unit = np.abs(np.asarray(normal, dtype=np.float64))
    unit /= np.linalg.norm(unit)
    axis = int(np.argmax(unit))
    return PLANES[axis] if unit[axis] >= np.cos(np.radians(OBLIQUE_DEGREES)) else "oblique"


def series_key(salt: bytes, identifier: str) -> str:
    """The only name a series gets in the output: HMAC-SHA256(salt, identifier), 16 hex digits (64 bits)."""
    return hmac.new(salt, identifier.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


def load_salt(salt: str | None) -> bytes:
    """--salt, else $VLMR_CT_SALT, else the per-user secret in SALT_FILE (created 0600 on first use)."""
    salt = salt or os.environ.get("VLMR_CT_SALT")
    if salt:
        return salt.encode("utf-8")
    path = SALT_FILE.expanduser()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip().encode("utf-8")


# ------------------------------------------------------------------------------------------------------
# captions: which slices become samples, with which question and answer
# ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caption:
    question: str
    answer: str
    slice: int | None  # None: every selected slice


def load_captions(path: Path) -> dict[str, list[Caption]]:
    """series identifier -> its caption rows (a small file: one row per series or per slice)."""
    captions: dict[str, list[Caption]] = defaultdict(list)
    lineno = 1
    try:
        for lineno, row in iter_csv(path, required=("series", "answer")):
            if isinstance(row, ValueError):
                raise SourceError(f"{path}: {row}")
            slice_text = (row.get("slice") or "").strip()
            if slice_text and not slice_text.isdigit():
                raise SourceError(f"{path}:{lineno}: slice {slice_text!r} is not a 0-based slice number: "
                                  "fix or blank it")
            captions[(row["series"] or "").strip()].append(
                Caption((row.get("question") or "").strip() or PROMPT, (row["answer"] or "").strip(),
                        int(slice_text) if slice_text else None))
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: non-UTF-8 byte after line {lineno} ({exc.reason}): re-save the file as UTF-8")
    return captions


class SliceError(ValueError):
    """Why a slice cannot be converted: `reason` is a schema skip reason; the message names the file and the fix."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class _Series:
    """One volume as an ordered list of slices (0 = most right/anterior/inferior), read one at a time."""

    def __init__(self, identifiers: list[str], key: str, plane: str, sources: list[str]):
        self.identifiers = identifiers  # what a --captions `series` cell may name
        self.key = key
        self.plane = plane  # PLANES, "oblique", or "unknown" without geometry
        self.sources = sources  # per slice, where it comes from: the skip report's id when it is unreadable

    def hu(self, index: int) -> np.ndarray:
        """(H, W) float64 HU of slice `index`; raises SliceError."""
        raise NotImplementedError

    def check(self, index: int) -> None:
        """Raises SliceError when slice `index` cannot be converted (reading it is the only sure check)."""
        self.hu(index)

    def read_order(self, index: int) -> int:
        """Sort key of slice `index` in the cheapest order to read the slices (by default slice order)."""
        return index


def _samples(series: _Series, captions: dict[str, list[Caption]] | None, windows: list[Window],
             every: int) -> Iterator[Record]:
    # Which slices are readable comes first, so "slice i of N" counts only slices that can be written.
    readable = []
    for index, source in enumerate(series.sources):
        try:
            series.check(index)
        except SliceError as exc:
            yield Skipped(source, exc.reason, str(exc))
        else:
            readable.append(index)
    count = len(readable)
    window_name = "+".join(w.name for w in windows)
    plane = "" if series.plane == "unknown" else f"{series.plane.capitalize()} "
    selected = range(0, count, every)
    if captions is None:
        wanted = {k: [Caption(PROMPT, ANSWER.format(plane=plane, number=k + 1, count=count, window=window_name), k)]
                  for k in selected}
    else:
        rows = next((captions[i] for i in series.identifiers if i in captions), None)
        if rows is None:
            yield Skipped(series.key, FILTERED, "no --captions row names this series")
            return
        wanted = defaultdict(list)
        for row in rows:
            for k in ([row.slice] if row.slice is not None else selected):
                wanted[k].append(row)
    for k in sorted(k for k in wanted if not 0 <= k < count):
        yield Skipped(f"{series.key}-{k:04d}", MALFORMED, f"--captions names slice {k}; the series has {count} "
                                                          "readable slices")
    for k in sorted((k for k in wanted if 0 <= k < count), key=lambda k: series.read_order(readable[k])):
        slice_id = f"{series.key}-{k:04d}"
        try:
            image = render(series.hu(readable[k]), windows)
        except SliceError as exc:  # it was readable a moment ago: the file changed during the conversion
            yield Skipped(series.sources[readable[k]], exc.reason, f"{exc} (changed during the conversion?)")
            continue
        ref = ImageRef(image, f"{series.key}/{k:04d}.png")
        extra = {"series": series.key, "slice": k, "slices": count, "plane": series.plane, "window": window_name}
        for n, row in enumerate(wanted[k]):
            sample_id = slice_id if len(wanted[k]) == 1 else f"{slice_id}-{n}"
            if not row.answer:
                yield Skipped(sample_id, EMPTY_TURN, "the --captions row has an empty `answer`: fill or drop it")
                continue
            yield Sample(sample_id, chat(row.question, row.answer), [ref], extra)


# ------------------------------------------------------------------------------------------------------
# DICOM
# ------------------------------------------------------------------------------------------------------


def _dcmread(path: Path, *, header_only: bool) -> Any:
    """pydicom's dataset of `path`, also when the file lacks the preamble and "DICM" prefix (older exporters,
    pydicom's own rtstruct.dcm). Raises InvalidDicomError when the file is not DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=header_only)
    except InvalidDicomError:
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=header_only, force=True)
        except Exception as exc:  # noqa: BLE001 - forced parsing of arbitrary bytes raises many types
            raise InvalidDicomError(str(exc))
    # `force` reads any bytes as elements; every DICOM object has its SOP Class UID (0008,0016), type 1.
    if "SOPClassUID" not in dataset:
        raise InvalidDicomError("no DICM prefix and no SOP Class UID")
    return dataset


@dataclass
class _DicomHeader:
    """What the header pass keeps of an image file (never an identifying value: the UID only groups slices)."""

    path: Path
    where: str  # path relative to --input
    series_uid: str
    modality: str
    image_type: list[str]
    normal: np.ndarray | None  # (3,) unit slice normal in LPS, from ImageOrientationPatient
    position: np.ndarray | None  # (3,) ImagePositionPatient in mm
    instance: int | None


def _vector(dataset: Any, keyword: str, size: int) -> np.ndarray | None:
    try:
        values = np.asarray([float(v) for v in dataset.get(keyword) or []])
    except (TypeError, ValueError):
        return None
    return values if values.shape == (size,) and np.isfinite(values).all() else None


def _read_header(path: Path, where: str) -> _DicomHeader | Skipped:
    """The image file's grouping, geometry and ordering fields, or why the file is no slice."""
    from pydicom.errors import InvalidDicomError

    # pydicom parses values lazily, so every access in _header_fields can raise on damaged bytes, not only dcmread.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns on damaged values; the skip report says what matters
            return _header_fields(_dcmread(path, header_only=True), path, where)
    except InvalidDicomError:
        return Skipped(where, MALFORMED, "not a DICOM file: remove it from the folder")
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on damaged headers
        return Skipped(where, MALFORMED, f"corrupt DICOM header ({type(exc).__name__}: {exc}): re-export/re-copy "
                                         "the file")


def _header_fields(dataset: Any, path: Path, where: str) -> _DicomHeader | Skipped:
    if "Rows" not in dataset:  # the Image Pixel module: every image has it, RTSTRUCT/RTPLAN/SR/DICOMDIR not
        sop = dataset.get("SOPClassUID") or dataset.file_meta.get("MediaStorageSOPClassUID")  # DICOMDIR: meta only
        if sop is not None and sop.name.endswith("Image Storage"):
            return Skipped(where, TRUNCATED_IMAGE, f"a {sop.name} file that ends before its image header: "
                                                   "truncated: re-export/re-copy the file")
        what = f"Modality {dataset.Modality}" if dataset.get("Modality") else getattr(sop, "name", "no SOP class")
        return Skipped(where, FILTERED, f"DICOM without image ({what}): not a slice, skipped")
    orientation = _vector(dataset, "ImageOrientationPatient", 6)
    normal = None if orientation is None else np.cross(orientation[:3], orientation[3:])  # rows x columns
    if normal is not None and np.linalg.norm(normal) < 0.5:  # cosines that are not two orthogonal unit vectors
        normal = None
    image_type = dataset.get("ImageType") or []
    image_type = [image_type] if isinstance(image_type, str) else image_type  # a single value is a str
    instance = str(dataset.get("InstanceNumber") or "")
    return _DicomHeader(
        path, where, str(dataset.get("SeriesInstanceUID") or Path(where).parent.as_posix()),
        str(dataset.get("Modality", "")), [str(v).upper() for v in image_type],
        None if normal is None else normal / np.linalg.norm(normal),
        _vector(dataset, "ImagePositionPatient", 3), int(instance) if instance.isdigit() else None)


def _dicom_hu(path: Path) -> np.ndarray:
    """(H, W) float64 HU of one slice file; raises SliceError with the reason and the fix."""
    from pydicom.pixels import apply_modality_lut

    compressed = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns on damaged values; the skip report says what matters
            dataset = _dcmread(path, header_only=False)
            syntax = dataset.file_meta.get("TransferSyntaxUID")
            compressed = syntax is not None and syntax.is_compressed
            _check_pixel_data(dataset, syntax)
            return np.asarray(apply_modality_lut(dataset.pixel_array, dataset), dtype=np.float64)  # stored -> HU
    except SliceError:
        raise
    except Exception as exc:  # noqa: BLE001 - damaged files and decoder plugins raise many types
        fix = "install pylibjpeg/gdcm, which decode more variants, or re-export the file uncompressed" \
            if compressed else "re-export the file"
        message = " ".join(line.strip() for line in str(exc).strip().splitlines())
        raise SliceError(UNREADABLE_IMAGE, f"pixel data unreadable ({type(exc).__name__}: {message}): {fix}")


def _check_pixel_data(dataset: Any, syntax: Any) -> None:
    """Raises SliceError for what shows before decoding: truncation, a missing decoder, several frames."""
    from pydicom.pixels import get_decoder
    from pydicom.pixels.utils import get_expected_length

    if "PixelData" not in dataset:  # pydicom drops the element the file ends inside (encapsulated: all of them)
        raise SliceError(TRUNCATED_IMAGE, "truncated pixel data (the file ends inside it): re-export/re-copy the file")
    if syntax is not None and syntax.is_compressed:
        decoder = get_decoder(syntax)  # NotImplementedError for a syntax pydicom has no decoder for
        if not decoder.is_available:
            raise SliceError(UNREADABLE_IMAGE, f"{syntax.name} pixel data and no decoder for it installed: install "
                                               f"pylibjpeg/gdcm ({'; '.join(decoder.missing_dependencies)})")
    elif len(dataset.PixelData) < get_expected_length(dataset):
        raise SliceError(TRUNCATED_IMAGE, f"truncated pixel data ({len(dataset.PixelData)} of "
                                          f"{get_expected_length(dataset)} bytes): re-export/re-copy the file")
    frames, samples = int(dataset.get("NumberOfFrames") or 1), int(dataset.get("SamplesPerPixel") or 1)
    if (frames, samples) != (1, 1):
        raise SliceError(UNREADABLE_IMAGE, f"{frames} frame(s) of {samples} sample(s) per pixel, expected one grey "
                                           "slice: split a multi-frame (enhanced) file into slices first, e.g. with "
                                           "dcm2niix")


class _DicomSeries(_Series):
    def __init__(self, headers: list[_DicomHeader], key: str, identifiers: list[str], plane: str):
        super().__init__(identifiers, key, plane, [h.where for h in headers])
        self.paths = [h.path for h in headers]

    def hu(self, index: int) -> np.ndarray:
        return _dicom_hu(self.paths[index])


def _dicom_volumes(headers: list[_DicomHeader], salt: bytes) -> Iterator[_DicomSeries | Skipped]:
    """Group image files by series; skip non-CT series and localizers; order each volume's slices."""
    series: dict[str, list[_DicomHeader]] = defaultdict(list)
    for header in headers:
        series[header.series_uid].append(header)
    for uid, members in sorted(series.items(), key=lambda item: item[1][0].path):
        folder = Path(members[0].where).parent.as_posix()
        if members[0].modality != "CT":
            yield from (Skipped(m.where, FILTERED, f"modality {m.modality!r}, not CT (series in {folder}/)")
                        for m in members)
            continue
        slices = []
        for m in members:
            if "LOCALIZER" in m.image_type:
                image_type = "\\".join(m.image_type)
                yield Skipped(m.where, FILTERED, f"localizer/scout image (ImageType {image_type}): not a slice of "
                                                 "the volume")
            else:
                slices.append(m)
        normals = [m.normal for m in slices if m.normal is not None]
        if any(abs(float(normals[0] @ n)) < np.cos(np.radians(SAME_ORIENTATION_DEGREES)) for n in normals):
            planes = ", ".join(sorted({plane_of(n) for n in normals}))
            yield from (Skipped(m.where, FILTERED, f"localizer/scout image: its series (in {folder}/) mixes slice "
                                                   f"orientations ({planes}): not a slice of the volume")
                        for m in slices)
            continue
        if not slices:
            continue
        if normals and all(m.position is not None for m in slices):
            # Turn the normal towards the positive direction of its main LPS axis (left, posterior, superior), so
            # slice 0 is the most right, anterior or inferior one whatever the row/column directions.
            normal = normals[0] * np.sign(normals[0][np.argmax(np.abs(normals[0]))])
            ordered = sorted(slices, key=lambda m: (float(m.position @ normal), m.path.name))
        elif all(m.instance is not None for m in slices):
            ordered = sorted(slices, key=lambda m: (m.instance, m.path.name))
        else:
            ordered = sorted(slices, key=lambda m: m.path.name)
        plane = plane_of(normals[0]) if normals else "unknown"
        yield _DicomSeries(ordered, series_key(salt, uid), [uid, folder], plane)


# ------------------------------------------------------------------------------------------------------
# NIfTI
# ------------------------------------------------------------------------------------------------------

# Display of a slice per plane (by the RAS axis of its normal): the RAS axes of the image rows and columns,
# each with the LPS direction (+1: towards left/posterior/superior) it runs in, top to bottom, left to right.
DISPLAY = {
    2: ((1, +1), (0, +1)),  # axial: rows anterior -> posterior, columns the patient's right -> left
    1: ((2, -1), (0, +1)),  # coronal: rows superior -> inferior, columns right -> left
    0: ((2, -1), (1, +1)),  # sagittal: rows superior -> inferior, columns anterior -> posterior
}


def _lps_sign(ras_axis: int, ras_sign: int) -> int:
    """The LPS direction of a voxel axis running `ras_sign` along RAS axis `ras_axis` (LPS flips x and y)."""
    return -ras_sign if ras_axis < 2 else ras_sign


class _NiftiSeries(_Series):
    def __init__(self, img: Any, where: str, key: str, name: str):
        import nibabel as nib

        self.img = img
        # io_orientation: per voxel axis, (RAS axis it runs along, +1 towards R/A/S or -1 away).
        ornt = nib.io_orientation(img.affine)
        ras_of = [int(ras) for ras, _ in ornt]
        lps_of = [_lps_sign(int(ras), int(sign)) for ras, sign in ornt]
        voxel_of = {ras: voxel for voxel, ras in enumerate(ras_of)}
        slice_dim = img.header.get_dim_info()[2]  # dcm2niix records the acquisition's slice axis here
        self.slice_axis = 2 if slice_dim is None else int(slice_dim)
        rows, cols = DISPLAY[ras_of[self.slice_axis]]
        remaining = [a for a in range(3) if a != self.slice_axis]
        self.transpose = [remaining.index(voxel_of[rows[0]]), remaining.index(voxel_of[cols[0]])]
        self.flip = [lps_of[voxel_of[ras]] != direction for ras, direction in (rows, cols)]
        # voxel index along the slice axis of each slice, in slice order (towards left/posterior/superior)
        self.voxels = list(range(img.shape[self.slice_axis]))[::lps_of[self.slice_axis]]
        super().__init__([name, name.removesuffix(".gz").removesuffix(".nii")], key,
                         plane_of(img.affine[:3, self.slice_axis]), [f"{where} slice {v}" for v in self.voxels])

    def check(self, index: int) -> None:
        """Nothing per slice: the whole file's data was read once when it was loaded (`_load_nifti`)."""

    def read_order(self, index: int) -> int:
        """Storage order: a gzip stream kept open reads forward in one pass (a 512 x 512 x 100 .nii.gz: 0.8 s),
        while a seek back decompresses from the start again (26 s in slice order when stored the other way)."""
        return self.voxels[index]

    def hu(self, index: int) -> np.ndarray:
        selector = tuple(self.voxels[index] if a == self.slice_axis else slice(None) for a in range(3))
        try:
            plane = np.asarray(self.img.dataobj[selector], dtype=np.float64)  # the two remaining voxel axes
        except Exception as exc:  # noqa: BLE001 - truncated/compressed-corrupt data raises many types
            raise SliceError(TRUNCATED_IMAGE, f"unreadable ({type(exc).__name__}: {exc}): re-export/re-copy the file")
        plane = plane.transpose(self.transpose)  # (rows, cols) of DISPLAY
        if self.flip[0]:
            plane = plane[::-1, :]
        if self.flip[1]:
            plane = plane[:, ::-1]
        return np.ascontiguousarray(plane)


def _load_nifti(path: Path, where: str, salt: bytes) -> _NiftiSeries | Skipped:
    import nibabel as nib

    try:
        img = nib.load(path, keep_file_open=True)  # one open gzip stream for all the slices (read_order)
        shape = img.shape
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types on corrupt headers
        return Skipped(where, MALFORMED, f"not a readable NIfTI file ({type(exc).__name__}: {exc}): re-export/re-copy "
                                         "it")
    if len(shape) != 3 and not (len(shape) == 4 and shape[3] == 1):
        return Skipped(where, MALFORMED, f"shape {shape}, expected one 3-D volume: split it first (e.g. fslsplit)")
    try:
        # The last voxel is stored last: reading it reaches the end of the (decompressed) data once, so a
        # truncated or corrupt file fails here rather than slice by slice.
        img.dataobj[(-1,) * len(shape)]
    except Exception as exc:  # noqa: BLE001 - short files and broken gzip streams raise many types
        return Skipped(where, TRUNCATED_IMAGE, f"image data unreadable ({type(exc).__name__}: {exc}): truncated or "
                                               "corrupt: re-export/re-copy the file")
    try:
        return _NiftiSeries(img.slicer[..., 0] if len(shape) == 4 else img, where, series_key(salt, where), path.name)
    except Exception as exc:  # noqa: BLE001 - a degenerate affine or dim_info breaks the orientation in many ways
        return Skipped(where, MALFORMED, f"unusable geometry ({type(exc).__name__}: {exc}): re-export it with a "
                                         "valid affine")


# ------------------------------------------------------------------------------------------------------
# converter entry points
# ------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--window", type=parse_windows, default=parse_windows("lung"),
                        help=f"preset ({', '.join(f'{k} {w:g}/{level:g}' for k, (w, level) in WINDOWS.items())}), "
                             "WIDTH/LEVEL, or three comma-separated windows as RGB channels")
    parser.add_argument("--every", type=int, default=1, help="keep every N-th slice")
    parser.add_argument("--captions", type=Path, help="CSV with columns series, answer[, question, slice]")
    parser.add_argument("--salt", help="secret for the series hashes (default: $VLMR_CT_SALT or a per-user secret)")
    parser.add_argument("--prefer", choices=PREFER, default="dicom",
                        help="a folder holding DICOM slices and NIfTI files (dcm2niix's output beside its input, "
                             "usually the same series): convert the DICOM slices (default), the NIfTI, or both")


def iter_records(input: Path, *, images: Path | None, seed: int, split: str, window: list[Window] | None = None,
                 every: int = 1, captions: Path | None = None, salt: str | None = None,
                 prefer: str = "dicom") -> Iterator[Record]:
    """Samples for every slice of every CT volume under `input` (see the module docstring)."""
    if not input.exists():
        raise SourceError(f"{input} does not exist: check --input")
    if every < 1:
        raise SourceError(f"--every {every}: must be 1 or more")
    if prefer not in PREFER:
        raise SourceError(f"--prefer {prefer}: use one of {', '.join(PREFER)}")
    windows = window or parse_windows("lung")
    table = load_captions(captions) if captions else None
    secret = load_salt(salt)
    root = input if input.is_dir() else input.parent
    files = sorted(p for p in input.rglob("*") if p.is_file() and not p.name.startswith(".")) \
        if input.is_dir() else [input]
    nifti = [p for p in files if p.name.endswith(NIFTI_SUFFIXES)]
    sidecars = {p.with_name(p.name.removesuffix(".gz").removesuffix(".nii") + ".json"): p.name for p in nifti}

    # Pass 1: headers only (no pixels), to classify every file and group the DICOM slices.
    headers: list[_DicomHeader] = []
    for path in files:
        where = path.relative_to(root).as_posix()
        if path.name.endswith(NIFTI_SUFFIXES):
            continue
        if path in sidecars:
            yield Skipped(where, FILTERED, f"JSON sidecar of {sidecars[path]} (dcm2niix metadata): not an image")
            continue
        item = _read_header(path, where)
        if isinstance(item, Skipped):
            yield item
        else:
            headers.append(item)

    # Folders holding both: dcm2niix's output beside the DICOM slices it was made from.
    both = {h.path.parent for h in headers} & {p.parent for p in nifti}
    names = {folder: ", ".join(p.name for p in nifti if p.parent == folder) for folder in both}
    if prefer == "nifti":
        for h in headers:
            if h.path.parent in both:
                yield Skipped(h.where, FILTERED, f"DICOM slice beside NIfTI ({names[h.path.parent]}), which was "
                                                 "converted instead (--prefer nifti): pass --prefer dicom or "
                                                 "--prefer both to convert the DICOM series")
        headers = [h for h in headers if h.path.parent not in both]

    # Pass 2: pixels, one slice at a time.
    yield from _convert(_dicom_volumes(headers, secret), table, windows, every)
    for path in nifti:
        where = path.relative_to(root).as_posix()
        if prefer == "dicom" and path.parent in both:
            yield Skipped(where, FILTERED, "NIfTI beside DICOM slices (dcm2niix's default output, usually the same "
                                           "series), which were converted instead (--prefer dicom): pass --prefer "
                                           "nifti or --prefer both to convert it")
        else:
            yield from _convert([_load_nifti(path, where, secret)], table, windows, every)


def _convert(volumes: Iterable[_Series | Skipped], captions: dict[str, list[Caption]] | None,
             windows: list[Window], every: int) -> Iterator[Record]:
    for item in volumes:
        if isinstance(item, Skipped):
            yield item
        else:
            yield from _samples(item, captions, windows, every)
