"""A bounded local load test of ``facemark serve``: N concurrent clients send a fixed number of requests.

    python bench/bench_service.py --model default --clients 50 --requests 1000
    python bench/bench_service.py --model default --clients 150 --requests 150 --queue 8 --upload-mb 9.9 \
        --out bench/results/service_uploads.md      # memory under many large uploads at once

Starts the server in a subprocess on a free port of 127.0.0.1 (never anything else), waits for
``/healthz``, warms up, sends ``--requests`` POSTs of one face photo from ``--clients`` concurrent
``httpx.AsyncClient`` connections, stops the server and reports requests/s, p50/p95/p99 latency,
non-200 answers and the server's resident memory (``/proc/<pid>/status``) after warm-up vs at the
end, to show that memory does not grow with traffic, and its peak (``VmHWM``, the high-water mark
over the server's whole life). Prints a Markdown table and writes ``bench/results/service.md``.

``--upload-mb`` pads the photo with trailing bytes (which decoders ignore) to that size, so every
request is a large upload: with ``--queue 8`` it shows that the server's peak memory is bounded by
its queue (a request that finds the queue full is refused before its body is read), not by how many
uploads arrive at once. Refused uploads may end as a connection error on the client instead of a
503 when the server answers before the client has finished sending; both count as errors.

The server's queue defaults to ``--clients``, so every request is admitted and the latency includes
queueing; a smaller ``--queue`` shows the backpressure instead (503s are counted as errors).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of ``pid`` now (``VmRSS``) or at its peak so far (``VmHWM``), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def start_server(args, port: int, log) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "facemark.cli", "serve", "--host", HOST, "--port", str(port), "--model", args.model,
           "--workers", str(args.workers), "--queue", str(args.queue if args.queue is not None else args.clients)]
    cmd += ["--backend", args.backend] * bool(args.backend) + ["--detector", args.detector] * bool(args.detector)
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + args.start_timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"the server exited with {server.returncode}:\n{log.read().decode(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"http://{HOST}:{port}/healthz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"the server did not answer /healthz within {args.start_timeout} s")


async def load(url: str, data: bytes, clients: int, requests: int) -> tuple[list[float], Counter, float]:
    """Send ``requests`` POSTs from ``clients`` concurrent workers; ``(latencies of 200s, status counts, wall s)``."""
    latencies, statuses, todo = [], Counter(), iter(range(requests))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        async def worker():
            for _ in todo:  # one shared iterator: the workers together send exactly `requests`
                started = time.perf_counter()
                try:
                    response = await client.post("/v1/landmarks", content=data, headers={"content-type": "image/jpeg"})
                    statuses[response.status_code] += 1
                    if response.status_code == 200:
                        latencies.append(time.perf_counter() - started)
                except httpx.HTTPError as err:
                    statuses[type(err).__name__] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return latencies, statuses, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--backend", choices=("onnx", "torch"), default=None)
    parser.add_argument("--detector", default=None)
    parser.add_argument("--image", default=str(ROOT / "facemark" / "assets" / "astronaut.jpg"), help="the photo sent")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=20, help="requests before the measured run (not counted)")
    parser.add_argument("--workers", type=int, default=2, help="the server's inference threads")
    parser.add_argument("--queue", type=int, default=None, help="the server's queue (default: --clients)")
    parser.add_argument("--start-timeout", type=float, default=300, help="seconds to wait for /healthz")
    parser.add_argument("--upload-mb", type=float, default=None,
                        help="pad every upload to this many MB (trailing bytes after the image)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "service.md"))
    args = parser.parse_args(argv)
    if not (0 < args.clients <= 1000 and 0 < args.requests <= 100_000):
        parser.error("keep it bounded: 1..1000 clients and 1..100000 requests")
    if args.upload_mb is not None and not 0 < args.upload_mb <= 100:
        parser.error("keep it bounded: --upload-mb in 0..100")
    image = Path(args.image).read_bytes()
    data = image + bytes(max(0, int(args.upload_mb * 2**20) - len(image))) if args.upload_mb else image

    port = free_port()
    url = f"http://{HOST}:{port}"
    with tempfile.TemporaryFile() as log:
        server = start_server(args, port, log)
        try:
            model = httpx.get(f"{url}/healthz").json()["model"]
            rss_started = rss_mb(server.pid)
            _, warm_statuses, _ = asyncio.run(load(url, image, min(args.clients, args.workers * 2), args.warmup))
            if warm_statuses[200] != args.warmup:
                raise RuntimeError(f"warm-up answers: {dict(warm_statuses)}")
            rss_warm = rss_mb(server.pid)
            rss_peak_warm = rss_mb(server.pid, "VmHWM")
            latencies, statuses, wall = asyncio.run(load(url, data, args.clients, args.requests))
            rss_end, rss_peak = rss_mb(server.pid), rss_mb(server.pid, "VmHWM")
        finally:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()

    ok = statuses.get(200, 0)
    p50, p95, p99 = (np.percentile(latencies, [50, 95, 99]) * 1000) if latencies else (float("nan"),) * 3
    table = "\n".join([
        "| clients | requests | upload MB | 200 | errors | req/s | p50 ms | p95 ms | p99 ms | RSS start MB | "
        "RSS after warm-up MB | RSS end MB | RSS peak MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {args.clients} | {args.requests} | {len(data) / 2**20:.2f} | {ok} | {args.requests - ok} | "
        f"{args.requests / wall:.1f} | {p50:.0f} | {p95:.0f} | {p99:.0f} | {rss_started:.0f} | {rss_warm:.0f} | "
        f"{rss_end:.0f} | {rss_peak:.0f} |",
    ])
    errors = {k: v for k, v in statuses.items() if k != 200}
    report = (
        f"# Service load test\n\n`python bench/bench_service.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
        f"on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {HOST} only.\n\n"
        f"Server: model `{model}`, backend {args.backend or 'default'}, detector {args.detector or 'default'}, "
        f"{args.workers} inference workers, queue {args.queue if args.queue is not None else args.clients}. "
        f"Image: `{Path(args.image).name}` ({len(image) / 1024:.0f} kB"
        f"{f', padded to {len(data) / 2**20:.2f} MB' if len(data) > len(image) else ''}), raw body. Latency is "
        f"client-side, 200s only; req/s counts every answer.\n\n{table}\n\n"
        f"Non-200 answers: {errors or 'none'}. RSS growth from warm-up to the end: {rss_end - rss_warm:+.1f} MB; "
        f"peak RSS (VmHWM) {rss_peak_warm:.0f} MB before the measured run, {rss_peak:.0f} MB after it.\n"
    )
    print(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(f"wrote {out}")
    return 0 if ok == args.requests or args.upload_mb else 1  # with --upload-mb, refusals are the point


if __name__ == "__main__":
    sys.exit(main())
