"""CT volumes -> windowed PNG slices: DICOM series (pydicom) and NIfTI files (nibabel), de-identified.

Raw layouts:
- DICOM: `--input` is a folder (searched recursively) holding one or more series, one file per slice, e.g.
  `study/series1/IM0001.dcm`. Files are grouped by SeriesInstanceUID (0020,000E); non-CT series are policy
  skips (`filtered`), multi-frame files and compressed pixel data without a decoder are `unreadable_image`.
- NIfTI: `--input` is a `.nii`/`.nii.gz` file or a folder of them (one 3D volume each, in HU once the
  header's scl_slope/scl_inter are applied, which is how dcm2niix writes CT).

Hounsfield units (DICOM PS3.3 C.11.1.1.2, Modality LUT): HU = stored value x RescaleSlope (0028,1053) +
RescaleIntercept (0028,1052). Windowing: a window of width W centred on level L clips HU to [L - W/2, L + W/2]
and maps it linearly to 0..255 (rounded half to even); this is the textbook presets' definition and differs
from DICOM's VOI LUT formula (C.11.2.1.2, `(x - (c - 0.5)) / (w - 1)`) by under one grey level. One window
gives a grey image; three windows (e.g. `brain,subdural,bone`) become the R, G, B channels.

Slice order and orientation, so slice 0 is always the most inferior axial slice:
- DICOM: by ImagePositionPatient (0020,0032) projected on the slice normal, the cross product of the two
  ImageOrientationPatient (0020,0037) direction cosines turned towards superior (left for sagittal, posterior
  for coronal); InstanceNumber (0020,0013) when positions are missing; then the file name. Pixels are shown as stored (rows top to bottom, columns left to right).
- NIfTI: the affine's closest RAS+ orientation (`nibabel.io_orientation`) picks the superior axis, sliced
  lazily (one slice in memory at a time); each slice is displayed radiologically like DICOM's axial default:
  anterior at the top, the patient's right on the image's left.

De-identification: nothing read from a file header other than pixels, rescale values and geometry reaches
the output. Series are named by a salted hash, HMAC-SHA256(salt, SeriesInstanceUID or file path relative to
`--input`) cut to 16 hex digits; the salt is `--salt`, else $VLMR_CT_SALT, else a random per-user secret
created once in ~/.config/vlmrecipes/ct_salt (so a rerun gives the same names and the output alone cannot be
linked back to UIDs). PNGs carry no text chunks. Skip-report details name files by their path relative to
`--input`: rename folders named after patients before converting.

Records: one sample per selected slice (`--every N` keeps every N-th). Without `--captions` the pair is
"Describe this CT slice." -> "Axial CT slice 12 of 40, lung window." (a position/window target for
alignment). With `--captions FILE.csv` (columns `series`, `answer`, optional `question` and `slice`; `series`
is the SeriesInstanceUID, the series folder relative to `--input`, or the NIfTI file name), each row becomes
one sample: on its `slice` (0-based, inferior to superior) or, when blank, on every selected slice; series
without a row are policy skips. One record, with the fields kept for evaluation:

    {"id": "3f2a9c0d1e4b5a69-0012", "messages": [{"role": "user", "content": "<image>Describe this CT slice."},
     {"role": "assistant", "content": "Axial CT slice 13 of 40, lung window."}],
     "images": ["ct/media/3f2a9c0d1e4b5a69/0012.png"], "series": "3f2a9c0d1e4b5a69", "slice": 12,
     "slices": 40, "window": "lung"}
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import secrets
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlmrecipes.data_converters.readers import SourceError, iter_csv
from vlmrecipes.data_converters.schema import EMPTY_TURN, FILTERED, MALFORMED, UNREADABLE_IMAGE, ImageRef, Record, \
    Sample, Skipped, chat

DEFAULT_NAME = "ct"
PROMPT = "Describe this CT slice."
ANSWER = "Axial CT slice {number} of {count}, {window} window."

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


def to_hu(stored: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """Stored pixel values -> Hounsfield units (DICOM's linear Modality LUT), as float64."""
    return stored.astype(np.float64) * slope + intercept


def apply_window(hu: np.ndarray, width: float, level: float) -> np.ndarray:
    """Clip HU to [level - width/2, level + width/2] and scale linearly to uint8 0..255."""
    low = level - width / 2
    scaled = (np.clip(hu, low, low + width) - low) * (255.0 / width)
    return np.rint(scaled).astype(np.uint8)


def render(hu: np.ndarray, windows: list[Window]) -> Any:
    """A (H, W) HU slice -> a PIL image: grey for one window, RGB with one window per channel for three."""
    from PIL import Image

    channels = [apply_window(hu, w.width, w.level) for w in windows]  # each (H, W) uint8
    if len(channels) == 1:
        return Image.fromarray(channels[0])  # (H, W) uint8 -> mode L
    return Image.fromarray(np.stack(channels, axis=-1))  # (H, W, 3) uint8 -> mode RGB


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
                raise SourceError(f"{path}:{lineno}: slice {slice_text!r} is not a 0-based slice number: fix or blank it")
            captions[(row["series"] or "").strip()].append(
                Caption((row.get("question") or "").strip() or PROMPT, (row["answer"] or "").strip(),
                        int(slice_text) if slice_text else None))
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: non-UTF-8 byte after line {lineno} ({exc.reason}): re-save the file as UTF-8")
    return captions


class _Series:
    """One volume as an ordered list of slices, read one at a time."""

    def __init__(self, identifiers: list[str], key: str, count: int):
        self.identifiers = identifiers  # what a --captions `series` cell may name
        self.key = key
        self.count = count

    def hu(self, index: int) -> np.ndarray:
        """(H, W) float64 HU of slice `index` (0 = most inferior); raises ValueError with a reason."""
        raise NotImplementedError


def _samples(series: _Series, captions: dict[str, list[Caption]] | None, windows: list[Window],
             every: int) -> Iterator[Record]:
    window_name = "+".join(w.name for w in windows)
    selected = range(0, series.count, every)
    if captions is None:
        wanted = {k: [Caption(PROMPT, ANSWER.format(number=k + 1, count=series.count, window=window_name), k)]
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
    for k in sorted(wanted):
        slice_id = f"{series.key}-{k:04d}"
        if not 0 <= k < series.count:
            yield Skipped(slice_id, MALFORMED, f"--captions names slice {k}; the series has {series.count}")
            continue
        try:
            image = render(series.hu(k), windows)
        except ValueError as exc:
            yield Skipped(slice_id, UNREADABLE_IMAGE, str(exc))
            continue
        ref = ImageRef(image, f"{series.key}/{k:04d}.png")
        extra = {"series": series.key, "slice": k, "slices": series.count, "window": window_name}
        for n, row in enumerate(wanted[k]):
            sample_id = slice_id if len(wanted[k]) == 1 else f"{slice_id}-{n}"
            if not row.answer:
                yield Skipped(sample_id, EMPTY_TURN, "the --captions row has an empty `answer`: fill or drop it")
                continue
            yield Sample(sample_id, chat(row.question, row.answer), [ref], extra)


# ------------------------------------------------------------------------------------------------------
# DICOM
# ------------------------------------------------------------------------------------------------------


def _dicom_order(ds: Any, path: Path) -> tuple | None:
    """(position along the slice normal, name) from the geometry; None when the file lacks it."""
    try:
        orientation = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        position = np.asarray([float(v) for v in ds.ImagePositionPatient])
    except (AttributeError, TypeError, ValueError):
        return None
    if orientation.shape != (6,) or position.shape != (3,):
        return None
    normal = np.cross(orientation[:3], orientation[3:])  # row cosines x column cosines
    # DICOM's patient axes run to the left, posterior and superior (LPS): point the normal along the positive
    # direction of its main axis, so slice 0 is the most inferior axial (most right sagittal) slice whatever
    # the row/column directions.
    if normal[np.argmax(np.abs(normal))] < 0:
        normal = -normal
    return float(position @ normal), path.name


class _DicomSeries(_Series):
    def __init__(self, paths: list[Path], root: Path, key: str, identifiers: list[str]):
        super().__init__(identifiers, key, len(paths))
        self.paths, self.root = paths, root

    def hu(self, index: int) -> np.ndarray:
        import pydicom

        path = self.paths[index]
        where = path.relative_to(self.root).as_posix()
        try:
            ds = pydicom.dcmread(path)
            stored = ds.pixel_array  # signed per PixelRepresentation
        except Exception as exc:  # noqa: BLE001 - corrupt or compressed pixel data raises many types
            raise ValueError(f"{where}: pixel data unreadable ({type(exc).__name__}: {exc}); "
                             "install the decoder it names (e.g. pylibjpeg) or drop the file")
        if stored.ndim != 2:
            raise ValueError(f"{where}: {stored.ndim}-D pixel data (multi-frame or colour); expected one grey slice")
        return to_hu(stored, float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0))


@dataclass(frozen=True)
class _DicomHeader:
    """What pass 1 keeps of a slice's header (never an identifying value: the UID is only a grouping key)."""

    path: Path
    series_uid: str
    modality: str
    position: tuple | None  # _dicom_order
    instance: int | None


def _read_header(path: Path, root: Path) -> _DicomHeader | None:
    """The slice's grouping and ordering fields; None for a DICOM file without an image (DICOMDIR, report).

    Raises ValueError naming the file when it is not DICOM or its header is corrupt: pydicom parses values
    lazily, so every access below can raise on damaged bytes, not only `dcmread`.
    """
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if ds.get("Rows") is None:  # stop_before_pixels leaves PixelData out; Rows comes with any image
            return None
        instance = str(ds.get("InstanceNumber") or "")
        return _DicomHeader(path, str(ds.get("SeriesInstanceUID") or path.parent.relative_to(root).as_posix()),
                            str(ds.get("Modality", "")), _dicom_order(ds, path),
                            int(instance) if instance.isdigit() else None)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on arbitrary bytes
        raise ValueError(f"not a DICOM file or a corrupt header ({type(exc).__name__}): remove it from the folder")


def _iter_dicom(root: Path, salt: bytes) -> Iterator[_DicomSeries | Skipped]:
    """Pass 1 reads headers only (no pixels) to group and order the slices; pixels are read per slice later."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")) if root.is_dir() else [root]
    root = root if root.is_dir() else root.parent
    series: dict[str, list[_DicomHeader]] = defaultdict(list)
    for path in files:
        where = path.relative_to(root).as_posix()
        try:
            header = _read_header(path, root)
        except ValueError as exc:
            yield Skipped(where, MALFORMED, str(exc))
            continue
        if header is None:
            yield Skipped(where, FILTERED, "a DICOM file without an image (DICOMDIR, report, ...)")
            continue
        series[header.series_uid].append(header)
    for uid, members in sorted(series.items(), key=lambda item: item[1][0].path):
        key = series_key(salt, uid)
        folder = members[0].path.parent.relative_to(root).as_posix()
        if members[0].modality != "CT":
            yield Skipped(key, FILTERED, f"series in {folder}: modality {members[0].modality!r}, not CT")
            continue
        if all(m.position is not None for m in members):
            ordered = sorted(members, key=lambda m: m.position)
        elif all(m.instance is not None for m in members):
            ordered = sorted(members, key=lambda m: (m.instance, m.path.name))
        else:
            ordered = sorted(members, key=lambda m: m.path.name)
        yield _DicomSeries([m.path for m in ordered], root, key, [uid, folder])


# ------------------------------------------------------------------------------------------------------
# NIfTI
# ------------------------------------------------------------------------------------------------------


class _NiftiSeries(_Series):
    def __init__(self, img: Any, where: str, key: str, name: str):
        import nibabel as nib

        self.img, self.where = img, where
        # io_orientation: per voxel axis, (RAS axis it runs along, +1 towards R/A/S or -1 away).
        ornt = nib.io_orientation(img.affine)
        self.axis_of = {int(ras): voxel for voxel, (ras, _) in enumerate(ornt)}  # RAS axis -> voxel axis
        self.sign_of = {int(ras): int(sign) for ras, sign in ornt}
        super().__init__([name, name.removesuffix(".gz").removesuffix(".nii")], key,
                         img.shape[self.axis_of[2]])

    def hu(self, index: int) -> np.ndarray:
        s_axis = self.axis_of[2]
        voxel = index if self.sign_of[2] > 0 else self.count - 1 - index  # 0 = most inferior
        selector = tuple(voxel if a == s_axis else slice(None) for a in range(3))
        try:
            plane = np.asarray(self.img.dataobj[selector], dtype=np.float64)  # the two remaining voxel axes
        except Exception as exc:  # noqa: BLE001 - truncated/compressed-corrupt data raises many types
            raise ValueError(f"{self.where}: slice {index} unreadable ({type(exc).__name__}: {exc})")
        remaining = [a for a in range(3) if a != s_axis]
        # (rows, cols) = (A/P axis, R/L axis)
        plane = plane.transpose([remaining.index(self.axis_of[1]), remaining.index(self.axis_of[0])])
        # Radiological display: rows run anterior -> posterior, columns patient right -> left, i.e. both
        # decreasing in RAS; flip the axes that run towards A or R.
        if self.sign_of[1] > 0:
            plane = plane[::-1, :]
        if self.sign_of[0] > 0:
            plane = plane[:, ::-1]
        return np.ascontiguousarray(plane)


def _iter_nifti(input: Path, salt: bytes) -> Iterator[_NiftiSeries | Skipped]:
    import nibabel as nib

    root = input if input.is_dir() else input.parent
    files = sorted(p for p in input.rglob("*") if p.name.endswith(NIFTI_SUFFIXES)) if input.is_dir() else [input]
    for path in files:
        where = path.relative_to(root).as_posix()
        key = series_key(salt, where)
        try:
            img = nib.load(path)
            shape = img.shape
        except Exception as exc:  # noqa: BLE001 - nibabel raises many types on corrupt headers
            yield Skipped(where, MALFORMED, f"not a readable NIfTI file ({type(exc).__name__}): re-export it")
            continue
        if len(shape) != 3 and not (len(shape) == 4 and shape[3] == 1):
            yield Skipped(key, MALFORMED, f"{where}: shape {shape}, expected one 3-D volume: split it first")
            continue
        if len(shape) == 4:
            img = img.slicer[..., 0]
        yield _NiftiSeries(img, where, key, path.name)


# ------------------------------------------------------------------------------------------------------
# converter entry points
# ------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--window", type=parse_windows, default=parse_windows("lung"),
                        help=f"preset ({', '.join(f'{k} {w:g}/{l:g}' for k, (w, l) in WINDOWS.items())}), "
                             "WIDTH/LEVEL, or three comma-separated windows as RGB channels")
    parser.add_argument("--every", type=int, default=1, help="keep every N-th slice")
    parser.add_argument("--captions", type=Path, help="CSV with columns series, answer[, question, slice]")
    parser.add_argument("--salt", help="secret for the series hashes (default: $VLMR_CT_SALT or a per-user secret)")


def iter_records(input: Path, *, images: Path | None, seed: int, split: str, window: list[Window] | None = None,
                 every: int = 1, captions: Path | None = None, salt: str | None = None) -> Iterator[Record]:
    """Samples for every slice of every CT volume under `input` (see the module docstring)."""
    if not input.exists():
        raise SourceError(f"{input} does not exist: check --input")
    if every < 1:
        raise SourceError(f"--every {every}: must be 1 or more")
    windows = window or parse_windows("lung")
    table = load_captions(captions) if captions else None
    secret = load_salt(salt)
    is_nifti = input.name.endswith(NIFTI_SUFFIXES) or (input.is_dir() and any(
        p.name.endswith(NIFTI_SUFFIXES) for p in input.rglob("*")))
    for item in (_iter_nifti if is_nifti else _iter_dicom)(input, secret):
        if isinstance(item, Skipped):
            yield item
        else:
            yield from _samples(item, table, windows, every)
