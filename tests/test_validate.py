"""`vlmr validate` and `vlmr stats` through the real CLI; token counts use the tiny Qwen2.5-VL's processor."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run_cli
from PIL import Image


def _dataset(tmp_path: Path, records: list, raw_tail: bytes = b"") -> Path:
    (tmp_path / "media").mkdir(exist_ok=True)
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records) + raw_tail)
    return path


def _rec(user: str, answer: str, images: list) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}], "images": images}


def test_validate_names_file_line_and_fix(tmp_path):
    (tmp_path / "media").mkdir()
    Image.new("RGB", (56, 56), "red").save(tmp_path / "media" / "ok.png")
    (tmp_path / "media" / "empty.png").write_bytes(b"")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.png"  # outside the media (= dataset) dir
    outside.write_bytes((tmp_path / "media" / "ok.png").read_bytes())
    (tmp_path / "media" / "link.png").symlink_to(outside)
    path = _dataset(tmp_path, [
        _rec("<image>What?", "red", ["media/ok.png"]),
        _rec("<image>What?", "", ["media/ok.png"]),
        _rec("What?", "red", ["media/ok.png"]),
        _rec("<image>What?", "see <image>", []),
        _rec("<image>What?", "red", ["media/empty.png"]),
        _rec("<image>What?", "red", ["media/missing.png"]),
        _rec("<image>What?", "red", ["/etc/hostname"]),
        _rec("<image>What?", "red", ["../outside.png"]),
        _rec("<image>What?", "red", ["media/link.png"]),
        {"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}], "images": []},
        _rec("<image>What?", "It shows an <image> tag", ["media/ok.png"]),
    ], raw_tail=b"{broken\n\xff\xfe\n")
    proc = run_cli(["vlmr", "validate", str(path), "--dataset-dir", str(tmp_path)], check=False)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 1
    expected = {2: "empty_turn", 3: "image_count_mismatch", 4: "written inside a assistant turn", 5: "empty_image_file",
                6: "missing_image", 7: "absolute or escapes", 8: "absolute or escapes", 9: "symlink leaving",
                10: "bad_roles", 11: "written inside a assistant turn", 12: "not JSON", 13: "not UTF-8"}
    for lineno, text in expected.items():
        assert any(line.startswith(f"{path}:{lineno}: ") and text in line for line in lines), (lineno, proc.stdout)
    assert not any(line.startswith(f"{path}:1: ") for line in lines)
    assert lines[-1] == f"{path}: 13 records, 12 errors, 0 warnings"
    allowed = run_cli(["vlmr", "validate", str(path), "--dataset-dir", str(tmp_path), "--allow-absolute"], check=False)
    assert "absolute or escapes" not in allowed.stdout and f"{path}:9: " not in allowed.stdout


def test_validate_recipe_and_stats_count_image_tokens(tmp_path, tiny_model):
    model = tiny_model("qwen2_5_vl")
    (tmp_path / "media").mkdir()
    Image.new("RGB", (56, 56), "red").save(tmp_path / "media" / "small.png")  # 2x2 merged patches -> 4 tokens
    Image.new("RGB", (224, 224), "red").save(tmp_path / "media" / "big.png")  # 8x8 merged patches -> 64 tokens
    path = _dataset(tmp_path, [_rec("<image>Color?", "red", ["media/small.png"]),
                               _rec("<image>Color?", "red", ["media/big.png"])])
    (tmp_path / "dataset_info.json").write_text(json.dumps({"toy": {
        "file_name": path.name, "formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}}))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model_name_or_path: {model}\ntemplate: qwen2_vl\ndataset: toy\ndataset_dir: {tmp_path}\n"
                      "cutoff_len: 64\nimage_max_pixels: 262144\n")
    proc = run_cli(["vlmr", "validate", "toy", "--dataset-dir", str(tmp_path), "--recipe", str(recipe)])
    assert "1 of 2 records exceed cutoff_len 64" in proc.stdout
    stats = run_cli(["vlmr", "stats", str(recipe)]).stdout
    small, big = (int(x) for x in stats.split("min ")[1].split()[0:1] + stats.split("max ")[1].split()[0:1])
    assert big - small == 60  # exactly the image-token difference: 64 - 4
    assert "recommended cutoff_len: 256" in stats
