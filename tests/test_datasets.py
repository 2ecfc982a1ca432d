"""The dataset owner (`data_converters/datasets.py`): registry errors, concurrent registration, one JSON Lines
reader for validate, eval and the converters, and demo data written by the converters' writer."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import cli_env, run_cli

from vlmrecipes.data_converters import datasets
from vlmrecipes.data_converters.datasets import DatasetError
from vlmrecipes.data_converters.minimind import iter_records
from vlmrecipes.data_converters.schema import Skipped
from vlmrecipes.data_converters.validate import DatasetFile, validate
from vlmrecipes.demo_data import generate
from vlmrecipes.eval.data import load_examples

RECORD = {"messages": [{"role": "user", "content": "<image>What?"}, {"role": "assistant", "content": "red"}],
          "images": ["a.png"]}


REGISTER_25 = """
import sys
from vlmrecipes.data_converters import datasets
for i in range(25):
    datasets.register(sys.argv[1], f"w{sys.argv[2]}_{i}", {"file_name": f"w{sys.argv[2]}/{i}.jsonl"})
"""


def test_concurrent_registrations_keep_every_entry(tmp_path):
    (tmp_path / "dataset_info.json").write_text(json.dumps({"first": {"file_name": "first.jsonl"}}))
    workers = [subprocess.Popen([sys.executable, "-c", REGISTER_25, str(tmp_path), str(w)]) for w in range(4)]
    assert [w.wait(timeout=120) for w in workers] == [0] * 4
    info = datasets.load_info(tmp_path)
    assert list(info)[0] == "first" and len(info) == 1 + 4 * 25  # no registration lost, the old entry kept first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset_info.json"]  # no temp file left


@pytest.mark.parametrize("info, name, where, problem", [
    ({"a": {"file_name": "a.jsonl"}}, "nosuch", "dataset_info.json", "no dataset 'nosuch'"),
    ({"hub": {"hf_hub_url": "org/set"}}, "hub", "dataset_info.json: entry 'hub'", "no local `file_name`"),
    ({"gone": {"file_name": "gone.jsonl"}}, "gone", "dataset_info.json: entry 'gone'", "gone.jsonl does not exist"),
    ({"odd": ["file_name"]}, "odd", "dataset_info.json: entry 'odd'", "a JSON array, expected an object"),
    ([], "any", "dataset_info.json", "a JSON array, expected an object of dataset entries"),
])
def test_registry_errors_name_the_file_the_entry_and_the_fix(tmp_path, info, name, where, problem):
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError) as caught:
        datasets.resolve(name, tmp_path)
    assert caught.value.where == f"{tmp_path}/{where}" and problem in caught.value.problem and caught.value.fix


def test_cli_entry_points_turn_dataset_errors_into_one_line_and_an_exit_status(tmp_path):
    registry = tmp_path / "dataset_info"  # VLMR_HOME/dataset_info: the default --dataset-dir of both commands
    registry.mkdir()
    (registry / "dataset_info.json").write_text(json.dumps({"known": {"file_name": "known.jsonl"}}))
    env = cli_env(VLMR_HOME=str(tmp_path))
    validate_proc = run_cli(["vlmr", "validate", "nosuch"], check=False, env=env, cwd=tmp_path)
    assert validate_proc.returncode == 1 and validate_proc.stderr == (
        f"error: {registry}/dataset_info.json: no dataset 'nosuch'; register it with `vlmr convert`, pass a dataset "
        "file, or use one of: known\n")
    (tmp_path / "p.jsonl").write_text(json.dumps({"predict": "a", "label": "a"}) + "\n")
    eval_proc = run_cli(["vlmr", "eval", "p.jsonl", "--task", "vqa", "--dataset", "known"], check=False, env=env,
                        cwd=tmp_path)
    assert eval_proc.returncode == 1 and eval_proc.stderr == (
        f"vlmr eval: {registry}/dataset_info.json: entry 'known': its file {registry}/known.jsonl does not exist; "
        "convert the dataset again with `vlmr convert`, or correct `file_name`\n")


def test_one_jsonl_reader_gives_validate_eval_and_converters_the_same_line_errors(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(RECORD).encode() + b"\n\n{broken\n" + b'"caf\xe9"\n')
    (tmp_path / "a.png").write_bytes(b"")
    expected = [f"{path}:3: not JSON (Expecting property name enclosed in double quotes at column 2); each line "
                "must be one JSON object",
                f"{path}:4: not UTF-8 (byte 0xe9 at byte 5 of the line); save the file as UTF-8, e.g. "
                "`iconv -f latin1 -t utf-8 IN > OUT`"]
    count, errors = validate(DatasetFile(path), tmp_path)  # every problem, line by line (BOM accepted)
    assert count == 3 and errors[1:] == expected and errors[0].startswith(f"{path}:1: empty_image_file")
    with pytest.raises(DatasetError, match="^" + expected[0].replace("(", r"\(").replace(")", r"\)")):
        load_examples(path)  # the first bad line stops the evaluation
    skipped = [r for r in iter_records(path, images=tmp_path, seed=0, split="train") if isinstance(r, Skipped)]
    # line 1 is not in minimind's layout (skipped as malformed); each bad line is skipped with the same words
    assert [s.detail for s in skipped[1:]] == expected


def test_demo_data_is_written_and_registered_by_the_converters_writer(tmp_path):
    files = generate("demo_ct", tmp_path)
    info = datasets.load_info(tmp_path)
    assert dict(info) == {f"demo_ct_{split}": datasets.entry_for(files[split], tmp_path) for split in ("train", "test")}
    assert info["demo_ct_test"]["file_name"] == "demo_ct/test.jsonl"
    first = json.loads(files["train"].read_text().splitlines()[0])
    assert first["id"] == "demo_ct_train_0000" and first["images"] == ["demo_ct/media/train_0000.png"]
    assert json.loads((tmp_path / "demo_ct" / "train.skipped.json").read_text())["written"] == 120
    for split in ("train", "test"):
        assert validate(datasets.resolve(f"demo_ct_{split}", tmp_path), tmp_path) == ((120, []) if split == "train"
                                                                                         else (40, []))
    before = {p: p.read_bytes() for p in sorted((tmp_path / "demo_ct").rglob("*.*"))}
    generate("demo_ct", tmp_path)
    assert {p: p.read_bytes() for p in sorted((tmp_path / "demo_ct").rglob("*.*"))} == before  # deterministic
