"""One split vocabulary (`train`/`validation`/`test`) for every `vlmr convert` source; an unknown or empty split is an
error naming the splits that exist, and nothing is written or registered."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from helpers import run_cli

from vlmrecipes.data_converters import cli as convert_cli
from vlmrecipes.data_converters import splits

FER_PIXELS = " ".join(str((i * 7) % 256) for i in range(48 * 48))


def _fer2013(path: Path, usages: list[str]) -> Path:
    """A FER2013 CSV in the Kaggle layout (emotion,pixels,Usage), one 48x48 face per usage."""
    path.write_text("\n".join(["emotion,pixels,Usage"] + [f"{i % 7},{FER_PIXELS},{u}" for i, u in enumerate(usages)])
                    + "\n")
    return path


def _convert(tmp_path: Path, csv: Path, split: str, check: bool = True):
    return run_cli(["vlmr", "convert", "fer2013", "--input", str(csv), "--dataset-dir", str(tmp_path / "dd"),
                    "--split", split], check=check)


def _registered(tmp_path: Path) -> dict:
    info = tmp_path / "dd" / "dataset_info.json"
    return json.loads(info.read_text()) if info.exists() else {}


def test_fer2013_split_names_aliases_and_errors(tmp_path):
    csv = _fer2013(tmp_path / "fer2013.csv", ["Training"] * 3 + ["PublicTest"] * 2 + ["PrivateTest"])
    # ours, the short form and FER2013's own name all mean PublicTest and register fer2013_validation
    for name in ("validation", "val", "PublicTest"):
        _convert(tmp_path, csv, name)
        assert set(_registered(tmp_path)) == {"fer2013_validation"}
        assert len((tmp_path / "dd" / "fer2013" / "validation.jsonl").read_text().splitlines()) == 2

    proc = _convert(tmp_path, csv, "dev-set", check=False)
    assert proc.returncode == 2
    assert "unknown split 'dev-set'" in proc.stderr
    assert "train (Training) | validation (PublicTest) | test (PrivateTest)" in proc.stderr

    # a split with no row: an error with the skip reasons, nothing registered, the previous output kept
    _convert(tmp_path, csv, "test")
    before = (tmp_path / "dd" / "fer2013" / "test.jsonl").read_bytes()
    only_training = _fer2013(tmp_path / "only_training.csv", ["Training"] * 2)
    proc = _convert(tmp_path, only_training, "test", check=False)
    assert proc.returncode == 2, proc.stdout
    assert "0 records for split 'test'" in proc.stderr and "Usage 'Training' is not 'PrivateTest'" in proc.stderr
    assert "validation (PublicTest)" in proc.stderr and "nothing written or registered" in proc.stderr
    assert (tmp_path / "dd" / "fer2013" / "test.jsonl").read_bytes() == before
    assert set(_registered(tmp_path)) == {"fer2013_validation", "fer2013_test"}


def test_a_source_without_the_split_refuses_it(tmp_path):
    proc = run_cli(["vlmr", "convert", "vqa-rad", "--input", str(tmp_path / "vqa_rad.json"), "--dataset-dir",
                    str(tmp_path / "dd"), "--split", "validation"], check=False)
    assert proc.returncode == 2 and "unknown split 'validation': this source has train | test" in proc.stderr
    assert not (tmp_path / "dd").exists()


def test_every_source_lists_its_splits_in_help():
    parser = argparse.ArgumentParser(prog="vlmr convert")
    convert_cli.add_arguments(parser)
    source_parsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for source, (module, _) in convert_cli.SOURCES.items():
        assert splits.describe(module) in " ".join(source_parsers[source].format_help().split()), source
        own = splits.source_splits(module) or dict.fromkeys(splits.SPLITS)
        assert set(own) <= set(splits.SPLITS), source  # the source's splits are named in our vocabulary
        if "validation" in own:
            assert splits.resolve("VAL", module) == "validation"
