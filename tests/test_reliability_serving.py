"""Serving safely: `llamafactory-cli api` as the README shows it, bound to 127.0.0.1 with an API key."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import BIN, cli_env, free_port

KEY = "test-key-4f1c"


def _request(port: int, path: str, key: str | None = None, body: dict | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _listening_addresses(port: int) -> set[str]:
    """Local addresses listening on `port` (IPv4, from /proc/net/tcp: state 0A = LISTEN)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


@pytest.mark.slow
def test_api_refuses_requests_without_the_key(tmp_path, tiny_model):
    port = free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(f"model_name_or_path: {tiny_model('qwen2_5_vl')}\ntemplate: qwen2_vl\n"
                      "infer_backend: huggingface\n")
    env = cli_env(API_HOST="127.0.0.1", API_PORT=str(port), API_KEY=KEY)
    log = open(tmp_path / "api.log", "w")
    server = subprocess.Popen([str(BIN / "llamafactory-cli"), "api", str(config)], env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, (tmp_path / "api.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the API server did not start"
            try:
                status, _ = _request(port, "/v1/models")
                break
            except OSError:  # not listening yet
                time.sleep(0.5)
        assert status == 401
        assert _listening_addresses(port) == {"127.0.0.1"}
        assert _request(port, "/v1/models", key="wrong-key")[0] == 401
        chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        assert _request(port, "/v1/chat/completions", body=chat)[0] == 401
        status, models = _request(port, "/v1/models", key=KEY)
        assert status == 200 and models["object"] == "list"
        status, reply = _request(port, "/v1/chat/completions", key=KEY, body=chat)
        assert status == 200 and reply["choices"][0]["message"]["role"] == "assistant"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
