"""`vlmr bench`: latency of an OpenAI-compatible chat endpoint (`llamafactory-cli api`, vLLM, a hosted API).

    vlmr bench --base-url http://127.0.0.1:8000/v1 --dataset demo_shapes_test --concurrency 4 --count 64 \\
        --task vqa --out reports/bench

Each request is one dataset record's first user turn, images inline as base64 data URLs (OpenAI's
`image_url` content parts), sent by `--concurrency` workers until `--count` requests (the dataset is cycled).
Measured per request: time to first token (streaming only: the first non-empty content delta), latency,
output tokens (`usage.completion_tokens`, asked for in streams with `stream_options.include_usage`; a stream
without usage, such as LLaMA-Factory's, counts its content deltas, a lower bound since its streamer can
merge tokens into one text piece), and the error kind: `timeout`, `refused` (nothing listening), `disconnected`
(the server went away mid-request), `http_<status>`, `malformed` (not the OpenAI schema), `other:<type>`.
Errors are results, never crashes. Written to `--out`: requests.csv (every request), bench.json,
bench.md, latency_cdf.png, timeline.png and, with `--task`, the task metric of the answers.
Ctrl-C stops sending, and writes what was measured so far (exit status 130).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import json
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import httpx

from vlmrecipes.data_converters.schema import IMAGE_TOKEN
from vlmrecipes.eval.data import Example, load_examples
from vlmrecipes.eval.plots import distribution_png, timeline_png
from vlmrecipes.eval.report import markdown_table
from vlmrecipes.eval.tasks import TASKS, check_labels, labels_help

# LLaMA-Factory accepts data URLs of these types only (its api/chat.py); other formats are sent as PNG.
_DATA_URL_TYPES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".gif": "gif", ".bmp": "bmp"}


@dataclass
class RequestResult:
    """One request. Times in seconds from the start of the run (`start_s`) or of the request."""

    index: int
    dataset_line: int
    start_s: float
    ttft_s: float | None = None
    latency_s: float | None = None
    output_tokens: int | None = None
    status: int | None = None
    error: str = ""
    detail: str = ""
    answer: str = ""
    label: str = ""


class Malformed(Exception):
    """The response does not follow the OpenAI chat completion schema."""


def data_url(path: Path) -> str:
    """A base64 `data:image/...` URL of an image file (re-encoded as PNG when the type is not accepted)."""
    kind = _DATA_URL_TYPES.get(path.suffix.lower())
    if kind:
        raw = path.read_bytes()
    else:
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.open(path).convert("RGB").save(buffer, format="PNG")
        kind, raw = "png", buffer.getvalue()
    return f"data:image/{kind};base64,{base64.b64encode(raw).decode()}"


def chat_body(example: Example, model: str, max_tokens: int, stream: bool, extra: dict[str, Any]) -> dict:
    """OpenAI chat request for a record: image parts first (our records put `<image>` before the text)."""
    text = example.prompt.replace(IMAGE_TOKEN, "").strip()
    content = [{"type": "image_url", "image_url": {"url": data_url(p)}} for p in example.images]
    content.append({"type": "text", "text": text})
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "stream": stream}
    if stream:  # OpenAI/vLLM then send `usage` in the last chunk; servers without it ignore the field
        body["stream_options"] = {"include_usage": True}
    return {**body, **extra}


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        # httpx's message ("All connection attempts failed") hides the OS error; its cause chain has it
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, ConnectionRefusedError):
            cause = cause.__cause__ or cause.__context__
        return "refused" if cause is not None else "connect_error"
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return "disconnected"
    if isinstance(exc, Malformed):
        return "malformed"
    return f"other:{type(exc).__name__}"


async def _stream(client: httpx.AsyncClient, url: str, body: dict, result: RequestResult, t0: float) -> None:
    async with client.stream("POST", url, json=body) as response:
        result.status = response.status_code
        if response.status_code >= 400:
            result.error = f"http_{response.status_code}"
            result.detail = (await response.aread()).decode(errors="replace")[:300]
            return
        pieces, done = [], False
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                done = True
                break
            try:
                chunk = json.loads(payload)
                delta = chunk["choices"][0]["delta"].get("content") if chunk.get("choices") else None
                usage = chunk.get("usage") or {}
            except (json.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError) as e:
                raise Malformed(f"bad stream chunk {payload[:120]!r}") from e
            if delta:
                if result.ttft_s is None:
                    result.ttft_s = time.perf_counter() - t0
                pieces.append(delta)
            if usage.get("completion_tokens") is not None:
                result.output_tokens = int(usage["completion_tokens"])
        if not done:
            raise Malformed("stream ended without data: [DONE]")
        result.answer = "".join(pieces)
        if result.output_tokens is None:
            result.output_tokens = len(pieces)


async def _complete(client: httpx.AsyncClient, url: str, body: dict, result: RequestResult, t0: float) -> None:
    response = await client.post(url, json=body)
    result.status = response.status_code
    if response.status_code >= 400:
        result.error = f"http_{response.status_code}"
        result.detail = response.text[:300]
        return
    try:
        reply = response.json()
        result.answer = reply["choices"][0]["message"]["content"] or ""
        result.output_tokens = (reply.get("usage") or {}).get("completion_tokens")
    except (json.JSONDecodeError, KeyError, IndexError, TypeError) as e:
        raise Malformed(f"not a chat completion: {response.text[:120]!r}") from e


async def _one(client: httpx.AsyncClient, url: str, body: dict, result: RequestResult, stream: bool) -> None:
    t0 = time.perf_counter()
    try:
        await (_stream if stream else _complete)(client, url, body, result, t0)
    except Exception as e:  # noqa: BLE001 - every failure is a measured result, never a crash
        result.error, result.detail = _error_kind(e), f"{type(e).__name__}: {e}"[:300]
    result.latency_s = time.perf_counter() - t0


async def send_requests(examples: Sequence[Example], base_url: str, results: list[RequestResult], *, model: str,
                    count: int, concurrency: int, stream: bool, timeout: float, api_key: str | None,
                    max_tokens: int, extra: dict[str, Any], progress: bool = True) -> None:
    """Send `count` requests with `concurrency` workers, appending to `results` as each finishes (so a
    caller interrupted by Ctrl-C keeps everything measured before)."""
    url = base_url.rstrip("/") + "/chat/completions"
    # encode each distinct record once, before the clock starts: base64 is the client's cost, not the server's
    bodies = {id(e): chat_body(e, model, max_tokens, stream, extra) for e in examples}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    start = time.perf_counter()

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            example = examples[i % len(examples)]
            result = RequestResult(i, example.line, time.perf_counter() - start, label=example.answer)
            await _one(client, url, bodies[id(example)], result, stream)
            results.append(result)
            if progress:
                state = result.error or "ok"
                print(f"[{len(results)}/{count}] {state} {result.latency_s:.3f}s", flush=True)

    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout), limits=limits, headers=headers) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))


def _percentile(values: Sequence[float], q: float) -> float | None:
    import numpy as np

    return float(np.percentile(values, q)) if values else None


def summarize(results: Sequence[RequestResult], wall_s: float, interrupted: bool) -> dict[str, Any]:
    """Latency/TTFT percentiles of successful requests, throughput, and errors by kind."""
    ok = [r for r in results if not r.error]
    latency = [r.latency_s for r in ok if r.latency_s is not None]
    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    tokens = [r.output_tokens for r in ok if r.output_tokens is not None]
    # decode speed of one request: tokens after the first over the time after the first token
    decode = [(r.output_tokens - 1) / (r.latency_s - r.ttft_s) for r in ok
              if r.output_tokens and r.output_tokens > 1 and r.ttft_s is not None and r.latency_s > r.ttft_s]
    errors: dict[str, int] = {}
    for r in results:
        if r.error:
            errors[r.error] = errors.get(r.error, 0) + 1
    return {
        "requests": len(results), "succeeded": len(ok), "failed": len(results) - len(ok), "errors": errors,
        "interrupted": interrupted, "wall_s": wall_s,
        "requests_per_s": len(ok) / wall_s if wall_s > 0 else None,
        "output_tokens_per_s": sum(tokens) / wall_s if wall_s > 0 and tokens else None,
        "decode_tokens_per_s_p50": _percentile(decode, 50),
        **{f"latency_p{q}_s": _percentile(latency, q) for q in (50, 95, 99)},
        **{f"ttft_p{q}_s": _percentile(ttft, q) for q in (50, 95, 99)},
        "latency_mean_s": sum(latency) / len(latency) if latency else None,
    }


def write_report(results: list[RequestResult], summary: dict[str, Any], out: Path, task: str | None,
                 labels: Sequence[str] | None, config: dict[str, Any]) -> dict[str, Any]:
    """requests.csv, bench.json, bench.md and the latency plots; with `task`, the task metrics of the successful
    answers (numbers only: the task's charts belong to `vlmr eval` reports)."""
    out.mkdir(parents=True, exist_ok=True)
    results = sorted(results, key=lambda r: r.index)
    with open(out / "requests.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[fl.name for fl in fields(RequestResult)])
        writer.writeheader()
        writer.writerows(asdict(r) for r in results)
    ok = [r for r in results if not r.error]
    distribution_png({"latency": [r.latency_s for r in ok], "time to first token": [r.ttft_s for r in ok if r.ttft_s]},
                     out / "latency_cdf.png", "Latency of successful requests", "seconds")
    timeline_png([(r.start_s, r.latency_s or 0.0, r.error or "ok") for r in results], out / "timeline.png",
                 "Requests over the run")
    report = {"config": config, "summary": summary, "task": None}
    if task and ok:
        rows = [{"predict": r.answer, "label": r.label, "_line": r.dataset_line} for r in ok]
        scored = TASKS[task].run(rows, labels)
        report["task"] = {"name": task, "scored": len(rows), "metrics": scored.metrics}
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# Serving benchmark", "", f"`{config['base_url']}` · dataset `{config['dataset']}` · "
             f"concurrency {config['concurrency']} · {'streaming' if config['stream'] else 'non-streaming'}"
             + (" · **interrupted**" if summary["interrupted"] else ""), ""]
    measures = [(key, f"{value:.4g}" if isinstance(value, float) else str(value))
                for key, value in summary.items() if key != "errors"]
    measures.append(("errors", ", ".join(f"{k}: {v}" for k, v in summary["errors"].items()) or "none"))
    lines += markdown_table(["measure", "value"], measures)
    if report["task"]:
        lines += ["", f"Task metric ({task}, {len(ok)} answers): "
                  + ", ".join(f"{k} {v:.3f}" for k, v in report["task"]["metrics"].items() if v is not None)]
    lines += ["", "![latency_cdf.png](latency_cdf.png)", "![timeline.png](timeline.png)", ""]
    (out / "bench.md").write_text("\n".join(lines))
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = __doc__.split("\n\n", 2)[2]
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--base-url", required=True, help="OpenAI base URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--dataset", required=True, help="ShareGPT JSONL file or dataset_info.json name")
    parser.add_argument("--out", type=Path, required=True, help="report folder")
    parser.add_argument("--model", default="default", help="the request's `model` field")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--count", type=int, help="requests to send (default: one per record)")
    parser.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--api-key", help="sent as `Authorization: Bearer KEY`")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--extra-body", type=json.loads, default={}, help="JSON merged into every request body")
    parser.add_argument("--task", choices=TASKS, help="score the answers with this `vlmr eval` task's metrics")
    parser.add_argument("--labels", nargs="+", help=f"with --task: {labels_help()}")


def run(args: argparse.Namespace) -> int:
    if args.concurrency < 1 or (args.count is not None and args.count < 1):
        print("vlmr bench: --concurrency and --count must be at least 1", file=sys.stderr)
        return 2
    try:
        check_labels(args.task, args.labels)  # before any request is sent
    except ValueError as e:
        print(f"vlmr bench: {e}", file=sys.stderr)
        return 2
    try:
        examples = load_examples(args.dataset)
    except (ValueError, FileNotFoundError) as e:
        print(f"vlmr bench: {e}", file=sys.stderr)
        return 1
    count = args.count or len(examples)
    config = {"base_url": args.base_url, "dataset": args.dataset, "model": args.model, "count": count,
              "concurrency": args.concurrency, "stream": args.stream, "timeout_s": args.timeout,
              "max_tokens": args.max_tokens}
    results: list[RequestResult] = []
    interrupted = False
    start = time.perf_counter()
    try:
        asyncio.run(send_requests(examples, args.base_url, results, model=args.model, count=count,
                              concurrency=args.concurrency, stream=args.stream, timeout=args.timeout,
                              api_key=args.api_key, max_tokens=args.max_tokens, extra=args.extra_body))
    except KeyboardInterrupt:  # asyncio.run cancelled the in-flight requests; keep the finished ones
        interrupted = True
    summary = summarize(results, time.perf_counter() - start, interrupted)
    report = write_report(results, summary, args.out, args.task, args.labels, config)
    print(json.dumps(report["summary"], indent=2))
    print(f"report: {args.out / 'bench.md'}")
    return 130 if interrupted else 0
