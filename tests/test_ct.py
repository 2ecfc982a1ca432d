"""`vlmr convert ct`: HU and window golden values, slice order, NIfTI orientation, captions, de-identification.

DICOM series are written here with pydicom (identifying tags filled with marker strings), NIfTI volumes with
nibabel; nothing is downloaded.
"""

from __future__ import annotations

import io
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli
from PIL import Image

from vlmrecipes.data_converters.ct import WINDOWS, apply_window, parse_windows, to_hu

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


def test_hu_and_window_golden_values():
    stored = np.array([-1000, 0, 24, 1024, 1064, 1174, 3000], dtype=np.int16)
    hu = to_hu(stored, 1.0, -1024.0)
    assert hu.tolist() == [-2024, -1024, -1000, 0, 40, 150, 1976]
    assert to_hu(np.array([100]), 2.5, -10.0).tolist() == [240.0]
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
    assert [r["slice"] for r in records] == [0, 1, 2] * 2 and records[0]["slices"] == 3
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
