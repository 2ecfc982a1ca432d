"""`vlmr bench` against a real `llamafactory-cli api` serving the tiny Qwen2.5-VL on 127.0.0.1.

One server per test module (restarted when a test killed it); every request stays on loopback and every
run is bounded by --count.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import pytest
from helpers import BIN, cli_env, free_port, run_cli

pytestmark = pytest.mark.slow


class Server:
    """`llamafactory-cli api` on a free loopback port (API_HOST/API_PORT are LLaMA-Factory's variables)."""

    def __init__(self, model: Path, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        config = workdir / f"serve-{self.port}.yaml"
        config.write_text(f"model_name_or_path: {model}\ntemplate: qwen2_vl\ninfer_backend: huggingface\n")
        self.log_path = workdir / f"api-{self.port}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([str(BIN / "llamafactory-cli"), "api", str(config)], stdout=self.log,
                                     stderr=subprocess.STDOUT,
                                     env=cli_env(API_HOST="127.0.0.1", API_PORT=str(self.port)))
        deadline = time.monotonic() + 300
        while True:
            assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "the API server did not start in 300 s"
            try:
                urllib.request.urlopen(f"{self.url}/models", timeout=5).read()
                return
            except OSError:  # not listening yet
                time.sleep(0.5)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory) -> Iterator[Callable[[], Server]]:
    """server() -> a running server, started again if a test killed the previous one."""
    workdir = tmp_path_factory.mktemp("api")
    current: list[Server] = []

    def get() -> Server:
        if not current or not current[-1].alive():
            current.append(Server(tiny_model("qwen2_5_vl"), workdir))
        return current[-1]

    yield get
    for s in current:
        s.stop()


@pytest.fixture(scope="module")
def dataset(demo_data) -> str:
    demo_data()
    return "demo_shapes_test"  # one image per request


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "requests.csv", newline="") as f:
        return list(csv.DictReader(f))


def _bench(url: str, dataset: str, out: Path, *extra: str) -> dict:
    run_cli(["vlmr", "bench", "--base-url", url, "--dataset", dataset, "--out", str(out), "--max-tokens", "6",
             *extra], timeout=300)
    return json.loads((out / "bench.json").read_text())


def test_streaming_image_requests_with_task_metric(server, dataset, tmp_path):
    report = _bench(server().url, dataset, tmp_path, "--count", "6", "--concurrency", "2", "--task", "vqa")
    summary = report["summary"]
    assert summary["succeeded"] == 6 and summary["errors"] == {}
    assert 0 < summary["ttft_p50_s"] <= summary["latency_p50_s"] <= summary["latency_p99_s"]
    assert summary["output_tokens_per_s"] > 0
    assert report["task"]["name"] == "vqa" and 0 <= report["task"]["metrics"]["exact_match"] <= 1
    rows = _rows(tmp_path)
    assert [r["index"] for r in rows] == [str(i) for i in range(6)]
    assert all(r["status"] == "200" and r["label"] and int(r["output_tokens"]) >= 1 for r in rows)
    for name in ("latency_cdf.png", "timeline.png", "bench.md"):
        assert (tmp_path / name).stat().st_size > 0


def test_non_streaming(server, dataset, tmp_path):
    summary = _bench(server().url, dataset, tmp_path, "--count", "3", "--no-stream")["summary"]
    assert summary["succeeded"] == 3 and summary["latency_p50_s"] > 0
    assert summary["ttft_p50_s"] is None  # a non-streamed answer has no separate first token
    assert all(int(r["output_tokens"]) >= 1 for r in _rows(tmp_path))  # from usage.completion_tokens


def test_bad_request_timeout_and_refused_are_counted(server, dataset, tmp_path):
    bad = _bench(server().url, dataset, tmp_path / "bad", "--count", "2", "--extra-body", '{"max_tokens": "lots"}')
    assert bad["summary"]["errors"] == {"http_422": 2}
    assert "max_tokens" in _rows(tmp_path / "bad")[0]["detail"]
    slow = _bench(server().url, dataset, tmp_path / "slow", "--count", "2", "--timeout", "0.001")
    assert slow["summary"]["errors"] == {"timeout": 2}
    refused = _bench(f"http://127.0.0.1:{free_port()}/v1", dataset, tmp_path / "refused", "--count", "2")
    assert refused["summary"]["errors"] == {"refused": 2}


def _start_bench(url: str, dataset: str, out: Path, count: int) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "vlmr"), "bench", "--base-url", url, "--dataset", dataset, "--out", str(out),
                             "--count", str(count), "--concurrency", "1", "--max-tokens", "6"],
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_progress(proc: subprocess.Popen, done: int) -> None:
    for line in proc.stdout:
        if line.startswith(f"[{done}/"):
            return
    raise AssertionError(f"vlmr bench exited with {proc.wait()} before {done} requests")


def test_server_killed_mid_run(server, dataset, tmp_path):
    api = server()
    bench = _start_bench(api.url, dataset, tmp_path, count=40)
    _wait_for_progress(bench, 3)
    api.proc.kill()
    output = bench.communicate(timeout=120)[0]
    assert bench.returncode == 0, output
    summary = json.loads((tmp_path / "bench.json").read_text())["summary"]
    assert summary["requests"] == 40 and summary["succeeded"] >= 3
    assert summary["failed"] >= 1 and set(summary["errors"]) <= {"refused", "disconnected"}, summary


def test_ctrl_c_writes_what_was_measured(server, dataset, tmp_path):
    bench = _start_bench(server().url, dataset, tmp_path, count=10_000)
    _wait_for_progress(bench, 2)
    bench.send_signal(signal.SIGINT)
    output = bench.communicate(timeout=120)[0]
    assert bench.returncode == 130, output
    summary = json.loads((tmp_path / "bench.json").read_text())["summary"]
    assert summary["interrupted"] and 2 <= summary["requests"] < 10_000
    assert len(_rows(tmp_path)) == summary["requests"]
