"""`vlmr convert ct`: HU and window golden values, slice order, planes and localizers from the geometry, every
input file accounted for, NIfTI orientation, captions, de-identification.

Real files where they exist: pydicom's bundled test files (CT_small.dcm with its series, geometry or ImageType
tags changed; RTSTRUCT, RTPLAN, SR, MR, RLE and JPEG-LS files; truncated copies cut from them) and nibabel's
bundled NIfTI files (reoriented or truncated copies). Golden-value series whose pixels must encode their
position are written with pydicom (identifying tags filled with marker strings); nothing is downloaded.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from helpers import run_cli
from nibabel.testing import data_path as NIBABEL_DATA
from PIL import Image
from pydicom.data import get_testdata_file

from vlmrecipes.data_converters.ct import WINDOWS, apply_window, iter_records, parse_windows, series_key
from vlmrecipes.data_converters.schema import Sample, Skipped

# Identifying values planted in every DICOM file: none may appear anywhere in the output.
MARKERS = {
    "PatientName": "ZZMARKER^PATIENTNAME",
    "PatientID": "ZZMARKERPATID77",
    "PatientBirthDate": "19030405",
    "PatientAddress": "ZZMARKER 1 PATIENT STREET",
    "InstitutionName": "ZZMARKER INSTITUTION",
    "InstitutionAddress": "ZZMARKER HOSPITAL ROAD",
    "AccessionNumber": "ZZMARKACC55",
    "ReferringPhysicianName": "ZZMARKER^REFERRER",
    "OperatorsName": "ZZMARKER^OPERATOR",
    "StudyDescription": "ZZMARKER STUDY DESCRIPTION",
    "SeriesDescription": "ZZMARKER SERIES DESCRIPTION",
    "StudyID": "ZZMARKSTUDY9",
    "StudyDate": "19990913",
}
UID_ROOT = "1.2.826.0.1.3680043.10.777."  # every UID planted starts here


def write_dicom(path: Path, stored: np.ndarray, *, series_uid: str, z: float | None, instance: int | None,
                slope: float = 1.0, intercept: float = -1024.0, modality: str = "CT",
                orientation=(1, 0, 0, 0, 1, 0)) -> None:
    """One uncompressed CT slice (int16 stored values) with the marker tags."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    sop_uid = f"{UID_ROOT}3.{zlib.crc32(str(path).encode())}"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    for tag, value in MARKERS.items():
        setattr(ds, tag, value)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = f"{UID_ROOT}1", series_uid
    ds.Modality = modality
    if instance is not None:
        ds.InstanceNumber = instance
    if z is not None:
        ds.ImagePositionPatient = [-10.0, -10.0, z]
        ds.ImageOrientationPatient = list(orientation)
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = stored.astype("<i2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def convert(tmp_path: Path, input: Path, *args: str, name: str = "ct", check: bool = True):
    """`vlmr convert ct` into tmp_path/dataset_info: (proc, records, skip report, output dir)."""
    dataset_dir = tmp_path / "dataset_info"
    proc = run_cli(["vlmr", "convert", "ct", "--input", str(input), "--dataset-dir", str(dataset_dir),
                    "--name", name, "--salt", "test-salt", *args], check=check)
    out = dataset_dir / name
    records = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()] \
        if (out / "train.jsonl").exists() else None
    report = json.loads((out / "train.skipped.json").read_text()) if (out / "train.skipped.json").exists() else None
    return proc, records, report, dataset_dir


def pixels(dataset_dir: Path, record: dict) -> np.ndarray:
    return np.asarray(Image.open(dataset_dir / record["images"][0]))


def test_window_golden_values():
    hu = np.array([-2024, -1024, -1000, 0, 40, 150, 1976], dtype=np.float64)
    # lung 1500/-600: [-1350, 150] -> 0..255 (x 0.17): -1024 -> 55.42, -1000 -> 59.5 -> 60 (half to even),
    # 0 -> 229.5 -> 230, 40 -> 236.3
    assert apply_window(hu, *WINDOWS["lung"]).tolist() == [0, 55, 60, 230, 236, 255, 255]
    # brain 80/40: [0, 80]; 40 -> 127.5 -> 128
    assert apply_window(hu, *WINDOWS["brain"]).tolist() == [0, 0, 0, 0, 128, 255, 255]
    # bone 1800/400: [-500, 1300]; 0 -> 500 * 255 / 1800 = 70.83 -> 71, 40 -> 76.5 -> 76 (half to even)
    assert apply_window(hu, *WINDOWS["bone"]).tolist() == [0, 0, 0, 71, 76, 92, 255]
    assert WINDOWS == {"brain": (80, 40), "subdural": (200, 75), "stroke": (40, 40), "lung": (1500, -600),
                       "mediastinum": (350, 50), "abdomen": (400, 50), "liver": (150, 30), "bone": (1800, 400)}
    assert [w.name for w in parse_windows("brain, subdural,bone")] == ["brain", "subdural", "bone"]
    assert parse_windows("400/40")[0].width == 400
    for bad in ("lung,bone", "nope", "0/40"):
        with pytest.raises(Exception, match="window"):
            parse_windows(bad)


def _series(root: Path, uid: str, zs: list[float], names: list[str]) -> None:
    """One slice per z; every pixel of the slice holds HU = z (stored = z + 1024), so order is visible."""
    for z, name in zip(zs, names):
        write_dicom(root / name, np.full((8, 6), z + 1024, dtype=np.int16), series_uid=uid, z=z, instance=None)


def test_dicom_series_order_windows_and_skips(tmp_path):
    raw = tmp_path / "raw"
    # File names and instance numbers disagree with the geometry: the position along the normal wins.
    for z, name, instance in [(20.0, "a.dcm", 1), (-20.0, "b.dcm", 3), (0.0, "c.dcm", 2)]:
        write_dicom(raw / "s1" / name, np.full((8, 6), z + 1024, dtype=np.int16), series_uid=f"{UID_ROOT}2.1",
                    z=z, instance=instance)
    # Rows/columns flipped (normal -z): still ordered inferior -> superior.
    for z, name in [(20.0, "x.dcm"), (-20.0, "y.dcm")]:
        write_dicom(raw / "s2" / name, np.full((8, 6), z + 1024, dtype=np.int16), series_uid=f"{UID_ROOT}2.2",
                    z=z, instance=None, orientation=(1, 0, 0, 0, -1, 0))
    # No geometry: InstanceNumber orders.
    for value, name, instance in [(20, "p.dcm", 2), (-20, "q.dcm", 1)]:
        write_dicom(raw / "s3" / name, np.full((8, 6), value + 1024, dtype=np.int16), series_uid=f"{UID_ROOT}2.3",
                    z=None, instance=instance)
    write_dicom(raw / "mr" / "m.dcm", np.zeros((8, 6), np.int16), series_uid=f"{UID_ROOT}2.4", z=0.0, instance=1,
                modality="MR")
    (raw / "s1" / "notes.txt").write_text("not dicom")
    _, records, report, dataset_dir = convert(tmp_path, raw, "--window", "40/0")  # [-20, 20] -> 0..255
    by_series: dict[str, list] = {}
    for r in records:
        by_series.setdefault(r["series"], []).append(r)
    values = [[int(pixels(dataset_dir, r)[0, 0, 0]) for r in rs] for rs in by_series.values()]
    assert values == [[0, 128, 255], [0, 255], [0, 255]]  # HU -20, 0, 20 (127.5 rounds to 128) | -20, 20
    first = records[0]
    assert first["messages"] == [{"role": "user", "content": "<image>Describe this CT slice."},
                                 {"role": "assistant", "content": "Axial CT slice 1 of 3, 40/0 window."}]
    assert first["id"] == f"{first['series']}-0000" and first["images"] == [f"ct/media/{first['series']}/0000.png"]
    assert (first["slice"], first["slices"]) == (0, 3)
    assert {s["reason"] for s in report["skipped"]} == {"filtered", "malformed_record"}
    assert {s["id"] for s in report["skipped"] if s["reason"] == "malformed_record"} == {"s1/notes.txt"}

    # Three windows -> RGB channels; --every 2 keeps slices 0 and 2 of the first series.
    _, records, _, dataset_dir = convert(tmp_path, raw / "s1", "--window", "brain,lung,bone", "--every", "2",
                                         name="rgb")
    assert [r["slice"] for r in records] == [0, 2] and records[0]["window"] == "brain+lung+bone"
    hu = np.array([-20.0, 20.0])
    expected = np.stack([apply_window(hu, *WINDOWS[w]) for w in ("brain", "lung", "bone")], axis=-1)
    assert [pixels(dataset_dir, r)[0, 0].tolist() for r in records] == expected.tolist()


def _nifti(path: Path, hu: np.ndarray, affine: np.ndarray, descrip: str = "") -> None:
    """HU stored as int16 with scl_slope/scl_inter chosen by nibabel (read back scaled, as dcm2niix's CT)."""
    import nibabel as nib

    img = nib.Nifti1Image(hu.astype(np.float32), affine)
    img.set_data_dtype(np.int16)
    img.header["descrip"] = descrip.encode()
    nib.save(img, path)


def test_nifti_slices_follow_the_affine(tmp_path):
    # RAS volume (x right, y anterior, z superior), 5 x 4 x 3, HU = 100 * z; one marked voxel at the patient's
    # right-anterior corner of every slice must land at the image's top-left (radiological display).
    ras = np.zeros((5, 4, 3))
    for z in range(3):
        ras[:, :, z] = 100 * z
    ras[4, 3, :] = 2000
    (tmp_path / "vols").mkdir()
    _nifti(tmp_path / "vols" / "ras.nii.gz", ras, np.diag([1.0, 1.0, 2.0, 1.0]), descrip="ZZMARKER NIFTI")
    # The same anatomy stored with x running left and z running inferior (a flipped affine).
    flipped = np.diag([-1.0, 1.0, -2.0, 1.0])
    flipped[:3, 3] = [4.0, 0.0, 4.0]
    _nifti(tmp_path / "vols" / "flipped.nii", ras[::-1, :, ::-1], flipped)
    _, records, _, dataset_dir = convert(tmp_path, tmp_path / "vols", "--window", "2000/10")  # [-990, 1010]
    # Records come in storage order (flipped.nii first: superior to inferior), numbered inferior to superior.
    assert [r["slice"] for r in records] == [2, 1, 0, 0, 1, 2] and records[0]["slices"] == 3
    records.sort(key=lambda r: (r["series"], r["slice"]))
    images = [pixels(dataset_dir, r)[..., 0] for r in records]  # grey, stored as RGB by the writer
    for a, b in zip(images[:3], images[3:]):
        np.testing.assert_array_equal(a, b)
    assert images[0].shape == (4, 5)  # (rows: anterior -> posterior, cols: right -> left)
    assert [int(img[1, 1]) for img in images[:3]] == [126, 139, 152]  # HU 0, 100, 200: 990 * 0.1275 = 126.2...
    assert int(images[0][0, 0]) == 255 and int(images[0][3, 4]) == 126


def test_captions_csv_pairs_series_and_slices(tmp_path):
    raw = tmp_path / "raw"
    _series(raw / "case1", f"{UID_ROOT}5.1", [0.0, 5.0, 10.0], ["1.dcm", "2.dcm", "3.dcm"])
    _series(raw / "case2", f"{UID_ROOT}5.2", [0.0], ["1.dcm"])
    _series(raw / "case3", f"{UID_ROOT}5.3", [0.0], ["1.dcm"])
    (tmp_path / "captions.csv").write_text(
        "series,slice,question,answer\n"
        "case1,1,Is there a nodule?,Yes\n"
        "case1,7,Out of range?,x\n"
        f"{UID_ROOT}5.2,,,No acute findings.\n"
        "case3,0,,\n")
    _, records, report, _ = convert(tmp_path, raw, "--captions", str(tmp_path / "captions.csv"))
    assert [(r["slice"], r["messages"][0]["content"], r["messages"][1]["content"]) for r in records] == \
        [(1, "<image>Is there a nodule?", "Yes"), (0, "<image>Describe this CT slice.", "No acute findings.")]
    assert sorted(s["reason"] for s in report["skipped"]) == ["empty_turn", "malformed_record"]


def test_no_identifying_value_in_any_output_byte(tmp_path):
    """De-identification: search every output file name and byte for the planted tag values and UIDs."""
    raw = tmp_path / "raw"
    _series(raw / "study", f"{UID_ROOT}9.1", [0.0, 2.5, 5.0], ["1.dcm", "2.dcm", "3.dcm"])
    vols = tmp_path / "vols"
    vols.mkdir()
    _nifti(vols / "case.nii.gz", np.full((4, 4, 2), 40.0), np.eye(4), descrip=MARKERS["PatientName"])
    _, dicom_records, _, dataset_dir = convert(tmp_path, raw, "--window", "brain,subdural,bone")
    _, nifti_records, _, _ = convert(tmp_path, vols, name="nifti")
    assert len(dicom_records) == 3 and len(nifti_records) == 2
    run_cli(["vlmr", "validate", "ct_train", "--dataset-dir", str(dataset_dir)])
    needles = [v.encode() for v in MARKERS.values()] + [UID_ROOT.encode(), UID_ROOT.rstrip(".").encode()]
    needles += [n.replace(b"^", b" ") for n in needles] + [n.lower() for n in needles]
    outputs = [p for p in dataset_dir.rglob("*")]
    assert len([p for p in outputs if p.suffix == ".png"]) == 5
    leaks = []
    for path in outputs:
        name = str(path.relative_to(dataset_dir)).encode()
        data = path.read_bytes() if path.is_file() else b""
        # PNG pixel data is zlib-compressed: also search the decoded pixels' raw bytes.
        if path.suffix == ".png":
            data += Image.open(io.BytesIO(data)).tobytes()
        leaks += [(str(path), n) for n in needles if n in name or n in data]
    assert leaks == []


# ------------------------------------------------------------------------------------------------------
# real files: every input accounted for, planes and localizers from the geometry
# ------------------------------------------------------------------------------------------------------

AXIAL, SAGITTAL, CORONAL = (1, 0, 0, 0, 1, 0), (0, 1, 0, 0, 0, -1), (1, 0, 0, 0, 0, -1)


def tilted(degrees: float) -> tuple:
    """Axial rows, columns tilted about the patient's x axis (a gantry tilt): the normal is `degrees` from z."""
    t = np.radians(degrees)
    return (1, 0, 0, 0, float(np.cos(t)), float(np.sin(t)))


def real_slice(path: Path, *, series_uid: str, source: str = "CT_small.dcm", position=None, orientation=None,
               image_type=None, modality="CT", intercept=None, geometry=True) -> Path:
    """A pydicom test file with its series, geometry or ImageType tags changed; pixel data untouched."""
    ds = pydicom.dcmread(get_testdata_file(source))
    ds.SeriesInstanceUID, ds.Modality = series_uid, modality
    ds.SOPInstanceUID = f"{UID_ROOT}8.{zlib.crc32(str(path).encode())}"
    if position is not None:
        ds.ImagePositionPatient = list(position)
    if orientation is not None:
        ds.ImageOrientationPatient = list(orientation)
    if image_type is not None:
        ds.ImageType = list(image_type)
    if intercept is not None:
        ds.RescaleIntercept = intercept
    if not geometry:
        del ds.ImagePositionPatient, ds.ImageOrientationPatient
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)
    return path


def copy_testdata(name: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(get_testdata_file(name), dest))


def cut(path: Path, n_bytes: int) -> Path:
    """A truncated copy: the last `n_bytes` of the file are gone, as after an interrupted copy."""
    path.write_bytes(path.read_bytes()[:-n_bytes])
    return path


def answers_by_series(records: list[dict], *uids: str) -> list[list[str]]:
    """Assistant answers of each series (named by its SeriesInstanceUID), in output order."""
    return [[r["messages"][1]["content"] for r in records if r["series"] == series_key(b"test-salt", uid)]
            for uid in uids]


def skips(report: dict) -> dict[str, tuple[str, str]]:
    return {s["id"]: (s["reason"], s["detail"]) for s in report["skipped"]}


def test_every_file_ends_as_records_or_in_the_skip_report(tmp_path):
    """Failure 2's rule for every kind of file in a study folder: DICOM without image (RTSTRUCT without preamble,
    RTPLAN, SR, DICOMDIR), truncated, compressed without decoder, non-CT, not DICOM; several series in one folder
    stay separate volumes, and slice numbers count only the slices written."""
    from pydicom.pixels import get_decoder

    raw, chest, rle, jpeg_ls = tmp_path / "study", f"{UID_ROOT}6.1", f"{UID_ROOT}6.2", f"{UID_ROOT}6.3"
    for k, z in enumerate([0.0, 5.0, 10.0, 15.0]):
        real_slice(raw / f"{k}.dcm", series_uid=chest, position=(-158.1, -179.0, z), orientation=AXIAL)
    cut(raw / "2.dcm", 2000)  # pixel data shorter than declared
    cut(real_slice(raw / "header_cut.dcm", series_uid=chest), 38000)  # ends inside the header, before Rows
    real_slice(raw / "rle.dcm", series_uid=rle, source="MR_small_RLE.dcm")  # RLE Lossless: pydicom decodes it
    real_slice(raw / "jpeg_ls.dcm", series_uid=jpeg_ls, source="JPEGLSNearLossless_16.dcm")
    for name in ("rtstruct.dcm", "rtplan.dcm", "test-SR.dcm", "MR_small.dcm", "DICOMDIR"):
        copy_testdata(name, raw / name)
    (raw / "notes.txt").write_text("scanned at 120 kV\n")

    _, records, report, _ = convert(tmp_path, raw)
    skipped = skips(report)
    assert answers_by_series(records, chest, rle) == [
        [f"Axial CT slice {k} of 3, lung window." for k in (1, 2, 3)], ["Axial CT slice 1 of 1, lung window."]]
    assert [r["slices"] for r in records] == [3, 3, 3, 1]
    assert skipped["2.dcm"] == ("truncated_image",
                                "truncated pixel data (30906 of 32768 bytes): re-export/re-copy the file")
    assert skipped["header_cut.dcm"][0] == "truncated_image" and "re-export/re-copy" in skipped["header_cut.dcm"][1]
    for name, modality in [("rtstruct.dcm", "RTSTRUCT"), ("rtplan.dcm", "RTPLAN"), ("test-SR.dcm", "SR")]:
        assert skipped[name] == ("filtered", f"DICOM without image (Modality {modality}): not a slice, skipped")
    dicomdir = "DICOM without image (Media Storage Directory Storage): not a slice, skipped"
    assert skipped["DICOMDIR"] == ("filtered", dicomdir)
    assert skipped["MR_small.dcm"] == ("filtered", "modality 'MR', not CT (series in ./)")
    assert skipped["notes.txt"] == ("malformed_record", "not a DICOM file: remove it from the folder")
    if get_decoder(pydicom.uid.JPEGLSNearLossless).is_available:  # pylibjpeg/gdcm installed: it converts
        assert len(answers_by_series(records, jpeg_ls)[0]) == 1
    else:
        reason, detail = skipped["jpeg_ls.dcm"]
        assert reason == "unreadable_image" and "no decoder for it installed: install pylibjpeg/gdcm" in detail
    # Nothing lost: each file is one record (one slice) or one skip entry.
    files = sorted(p.name for p in raw.iterdir())
    assert len(records) + len(skipped) == len(files) and set(skipped) <= set(files)


def test_folder_with_dicom_and_nifti_converts_the_dicom_and_lists_the_nifti(tmp_path):
    """Failure 2: dcm2niix's .nii.gz (here nibabel's anatomical.nii) and its JSON sidecar beside the DICOM slices
    no longer switch the whole folder to NIfTI: the DICOM series is converted, the NIfTI listed with the flag."""
    raw, uid = tmp_path / "study", f"{UID_ROOT}6.4"
    for k, z in enumerate([0.0, 5.0, 10.0]):
        real_slice(raw / "series" / f"{k}.dcm", series_uid=uid, position=(-158.1, -179.0, z), orientation=AXIAL)
    shutil.copy(os.path.join(NIBABEL_DATA, "anatomical.nii"), raw / "series" / "series_3.nii")
    (raw / "series" / "series_3.json").write_text('{"Modality": "CT"}')

    _, records, report, _ = convert(tmp_path, raw)
    assert answers_by_series(records, uid) == [[f"Axial CT slice {k} of 3, lung window." for k in (1, 2, 3)]]
    assert len(records) == 3
    skipped = skips(report)
    assert skipped["series/series_3.nii"][0] == "filtered"
    assert "--prefer nifti or --prefer both" in skipped["series/series_3.nii"][1]
    assert skipped["series/series_3.json"][0] == "filtered" and "sidecar" in skipped["series/series_3.json"][1]

    _, records, report, _ = convert(tmp_path, raw, "--prefer", "nifti", name="nifti")
    assert [r["messages"][1]["content"] for r in records] == [f"Axial CT slice {k} of 25, lung window."
                                                                for k in range(1, 26)]
    assert {k: v[0] for k, v in skips(report).items()} == {f"series/{k}.dcm": "filtered" for k in range(3)} | {
        "series/series_3.json": "filtered"}
    assert "--prefer dicom or --prefer both" in skips(report)["series/0.dcm"][1]

    _, records, _, _ = convert(tmp_path, raw, "--prefer", "both", name="both")
    assert len(records) == 3 + 25 and len({r["series"] for r in records}) == 2


def test_localizers_skipped_and_planes_from_orientation(tmp_path):
    """Failure 3: a series of two scouts (one sagittal, one coronal) is skipped, not "Axial slice 1 of 2"; the
    plane of every other series comes from its ImageOrientationPatient."""
    raw = tmp_path / "study"
    uids = {name: f"{UID_ROOT}7.{k}" for k, name in enumerate(
        ["scout", "mixed", "sagittal", "coronal", "tilt20", "tilt45", "no_geometry"])}
    scout_type = ("ORIGINAL", "PRIMARY", "LOCALIZER")
    real_slice(raw / "scout" / "1.dcm", series_uid=uids["scout"], orientation=SAGITTAL, image_type=scout_type)
    real_slice(raw / "scout" / "2.dcm", series_uid=uids["scout"], orientation=CORONAL, image_type=scout_type)
    real_slice(raw / "mixed" / "1.dcm", series_uid=uids["mixed"], orientation=SAGITTAL)
    real_slice(raw / "mixed" / "2.dcm", series_uid=uids["mixed"], orientation=CORONAL)
    # Sagittal slices at x = +10 (left) and -10 (right); the intercept tells them apart in the pixels.
    real_slice(raw / "sagittal" / "a.dcm", series_uid=uids["sagittal"], orientation=SAGITTAL, position=(10, 0, 0),
               intercept=-1024)
    real_slice(raw / "sagittal" / "b.dcm", series_uid=uids["sagittal"], orientation=SAGITTAL, position=(-10, 0, 0),
               intercept=-1124)
    real_slice(raw / "coronal" / "1.dcm", series_uid=uids["coronal"], orientation=CORONAL)
    real_slice(raw / "tilt20" / "1.dcm", series_uid=uids["tilt20"], orientation=tilted(20))
    real_slice(raw / "tilt45" / "1.dcm", series_uid=uids["tilt45"], orientation=tilted(45))
    real_slice(raw / "no_geometry" / "1.dcm", series_uid=uids["no_geometry"], geometry=False)

    _, records, report, dataset_dir = convert(tmp_path, raw, "--window", "1500/0")
    skipped = skips(report)
    scout_detail = "localizer/scout image (ImageType ORIGINAL\\PRIMARY\\LOCALIZER): not a slice of the volume"
    assert skipped["scout/1.dcm"] == ("filtered", scout_detail)
    assert skipped["scout/2.dcm"][0] == "filtered"
    mixed_detail = ("localizer/scout image: its series (in mixed/) mixes slice orientations (coronal, sagittal): "
                    "not a slice of the volume")
    assert skipped["mixed/1.dcm"] == skipped["mixed/2.dcm"] == ("filtered", mixed_detail)
    assert answers_by_series(records, *(uids[n] for n in ["scout", "mixed", "sagittal", "coronal", "tilt20",
                                                           "tilt45", "no_geometry"])) == [
        [], [], ["Sagittal CT slice 1 of 2, 1500/0 window.", "Sagittal CT slice 2 of 2, 1500/0 window."],
        ["Coronal CT slice 1 of 1, 1500/0 window."], ["Axial CT slice 1 of 1, 1500/0 window."],
        ["Oblique CT slice 1 of 1, 1500/0 window."], ["CT slice 1 of 1, 1500/0 window."]]
    planes = {"sagittal": "sagittal", "coronal": "coronal", "tilt20": "axial", "tilt45": "oblique",
              "no_geometry": "unknown"}
    assert {r["series"]: r["plane"] for r in records} == {
        series_key(b"test-salt", uids[name]): plane for name, plane in planes.items()}
    # Slice 0 is the most right one (x = -10, intercept -1124: 100 HU darker everywhere).
    sagittal = [pixels(dataset_dir, r)[..., 0].astype(int) for r in records if r["plane"] == "sagittal"]
    assert (sagittal[0] <= sagittal[1]).all() and (sagittal[0] < sagittal[1]).any()
    assert len(records) + len(skipped) == len(list(raw.rglob("*.dcm")))


def test_real_ct_file_hu_and_window(tmp_path):
    """CT_small.dcm: HU from pydicom's modality LUT, then our window, equal to pydicom's own windowing with DICOM's
    LINEAR_EXACT function (up to exact x.5 ties, which pydicom's float arithmetic rounds either way)."""
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_windowing

    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    copy_testdata("CT_small.dcm", tmp_path / "raw" / "ct.dcm")
    _, records, _, dataset_dir = convert(tmp_path, tmp_path / "raw", "--window", "abdomen")
    assert records[0]["messages"][1]["content"] == "Axial CT slice 1 of 1, abdomen window."
    hu = source.pixel_array.astype(int) * int(source.RescaleSlope) + int(source.RescaleIntercept)  # (128, 128)
    width, level = WINDOWS["abdomen"]
    scaled = (np.clip(hu, level - width // 2, level + width // 2) - (level - width // 2)) * 255  # / width, exact
    ties = scaled % width * 2 == width
    actual = pixels(dataset_dir, records[0])[..., 0]
    np.testing.assert_array_equal(actual, np.rint(scaled / width).astype(np.uint8))  # half to even at ties
    display = Dataset()  # a 0..255 display with the abdomen window
    display.PhotometricInterpretation, display.BitsStored, display.PixelRepresentation = "MONOCHROME2", 8, 0
    display.WindowWidth, display.WindowCenter, display.VOILUTFunction = width, level, "LINEAR_EXACT"
    by_pydicom = np.rint(apply_windowing(hu.astype(np.float64), display))
    assert ties.sum() > 0 and (actual[~ties] == by_pydicom[~ties]).all()
    assert (np.abs(actual[ties] - by_pydicom[ties]) <= 1).all()


def _slices(input: Path, window: str) -> tuple[list[str], list[np.ndarray], dict[str, tuple[str, str]]]:
    """In-process conversion: (answers, (H, W) uint8 images, skips by id) of every volume under `input`."""
    answers, images, skipped = [], [], {}
    for item in iter_records(input, images=None, seed=0, split="train", window=parse_windows(window), salt="t"):
        if isinstance(item, Sample):
            answers.append(item.messages[1]["content"])
            images.append(np.asarray(item.images[0].source))
        else:
            assert isinstance(item, Skipped)
            skipped[item.id] = (item.reason, item.detail)
    return answers, images, skipped


def test_nifti_plane_from_the_affine_and_display(tmp_path):
    """nibabel's anatomical.nii (L,A,S voxel axes) stored again with its slice axis along L-R and A-P (the same
    anatomy, as a sagittal or coronal acquisition is stored), or with the header's slice dimension set: plane
    labels from the affine, and every sagittal or coronal slice is the matching cut through the axial stack in
    the displayed orientation."""
    img = nib.load(os.path.join(NIBABEL_DATA, "anatomical.nii"))
    orientation = nib.orientations.io_orientation(img.affine)
    for codes, name in [(("A", "S", "L"), "sagittal"), (("L", "S", "P"), "coronal")]:
        folder = tmp_path / name
        folder.mkdir()
        nib.save(img.as_reoriented(nib.orientations.ornt_transform(orientation, nib.orientations.axcodes2ornt(codes))),
                 folder / "anat.nii.gz")
    (tmp_path / "dim_info").mkdir()  # the same L,A,S file whose header names voxel axis 0 (L-R) as the slice axis
    sliced_lr = nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, img.header)
    sliced_lr.header.set_dim_info(slice=0)
    nib.save(sliced_lr, tmp_path / "dim_info" / "anat.nii")
    rotation = np.eye(4)  # 45 degrees about x: the slice axis is halfway between S and A
    rotation[1:3, 1:3] = [[np.cos(np.pi / 4), -np.sin(np.pi / 4)], [np.sin(np.pi / 4), np.cos(np.pi / 4)]]
    (tmp_path / "oblique").mkdir()
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), rotation @ img.affine), tmp_path / "oblique" / "anat.nii")

    window = "32000/15000"  # the file's values span -610..30393
    answers, axial, _ = _slices(Path(os.path.join(NIBABEL_DATA, "anatomical.nii")), window)
    assert answers[0] == "Axial CT slice 1 of 25, 32000/15000 window." and axial[0].shape == (41, 33)
    # (inferior -> superior, anterior -> posterior, right -> left)
    volume = np.stack(axial)
    answers, sagittal, _ = _slices(tmp_path / "sagittal", window)
    assert answers[0] == "Sagittal CT slice 1 of 33, 32000/15000 window."
    # sagittal slice s (right -> left): rows superior -> inferior, columns anterior -> posterior
    np.testing.assert_array_equal(np.stack(sagittal), volume[::-1].transpose(2, 0, 1))
    answers, by_dim_info, _ = _slices(tmp_path / "dim_info", window)
    assert answers[0] == "Sagittal CT slice 1 of 33, 32000/15000 window."
    np.testing.assert_array_equal(np.stack(by_dim_info), np.stack(sagittal))
    answers, coronal, _ = _slices(tmp_path / "coronal", window)
    assert answers[-1] == "Coronal CT slice 41 of 41, 32000/15000 window."
    # coronal slice c (anterior -> posterior): rows superior -> inferior, columns right -> left
    np.testing.assert_array_equal(np.stack(coronal), volume[::-1].transpose(1, 0, 2))
    answers, _, _ = _slices(tmp_path / "oblique", window)
    assert answers[0] == "Oblique CT slice 1 of 25, 32000/15000 window."


def test_truncated_and_4d_nifti_are_reported(tmp_path):
    """A NIfTI cut short (plain, or gzip as dcm2niix writes) is "truncated: re-copy", once per file; a header
    cut short is not a readable NIfTI; a 4-D one names the fix."""
    import gzip

    folder = tmp_path / "vols"
    folder.mkdir()
    for name in ("anatomical.nii", "standard.nii.gz", "example4d.nii.gz"):
        shutil.copy(os.path.join(NIBABEL_DATA, name), folder / name)
    shutil.copy(folder / "standard.nii.gz", folder / "standard_ok.nii.gz")
    (folder / "anatomical.nii.gz").write_bytes(gzip.compress((folder / "anatomical.nii").read_bytes()))
    cut(folder / "anatomical.nii", 5000)
    cut(folder / "anatomical.nii.gz", 500)
    cut(folder / "standard.nii.gz", 40)  # 143 bytes: the cut reaches the header
    answers, _, skipped = _slices(folder, "lung")
    assert answers == [f"Axial CT slice {k} of 7, lung window." for k in range(1, 8)]  # standard_ok.nii.gz
    for name in ("anatomical.nii", "anatomical.nii.gz"):
        reason, detail = skipped[name]
        assert reason == "truncated_image" and detail.endswith("truncated or corrupt: re-export/re-copy the file")
    assert skipped["standard.nii.gz"][0] == "malformed_record"
    assert skipped["standard.nii.gz"][1].startswith("not a readable NIfTI file")
    assert skipped["example4d.nii.gz"] == (
        "malformed_record", "shape (128, 96, 24, 2), expected one 3-D volume: split it first (e.g. fslsplit)")
    assert len(skipped) == 4
