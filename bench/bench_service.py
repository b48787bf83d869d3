"""A bounded local load test of ``facemark serve``: N concurrent clients send a fixed number of requests.

    python -m bench.bench_service --model default --clients 50 --requests 1000
    python -m bench.bench_service --model default --clients 150 --requests 150 --queue 8 --upload-mb 9.9 \
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

Attack mode measures good traffic while bad clients run alongside it, against its rate alone::

    python -m bench.bench_service --model default --clients 8 --requests 150 --warmup 10 \
        --attack slow:20,idle:20,idle:2000,crafted:3,pipeline:500,greedy:8,scanbomb:3 --attack-lead 3
        # -> bench/results/service_attack.md

Baseline phases (good traffic alone) alternate with one phase per attack, each with the same
``--requests`` from ``--clients`` good clients, the attack started ``--attack-lead`` seconds before:
``alone, attack 1, alone, attack 2, ..., alone``. An attack's rate is given as a share of the mean
of the baselines just before and just after it, so that the machine's own drift (other jobs on
its CPUs: ±30 % within minutes) weighs on the comparison as little as it can.
``slow:N``: N connections that send a request head, then one body byte per 0.5 s, and reconnect at
once when answered or closed. ``idle:N``: N connections that send part of a request head and
nothing more, reopened when closed. ``crafted:N``: N clients uploading, one after another, a 10 MB
JPEG of ``FF D8``, ten million fill bytes and the photo (a header that took Pillow 10 s on the event
loop). ``pipeline:N``: N connections that send ``GET /healthz`` requests back to back (HTTP
pipelining) and read none of the answers, reopened at once when closed (``longest held ms``: the
longest one lived). ``greedy:N``: one client, from its own address (``127.0.0.2``), trying to hold N
live-tracking sessions with one frame per session every 14 s (inside the 15 s idle timeout), retrying
each second; alongside it a good live-tracking client (from ``127.0.0.1``) opens a session and sends
a frame a second (**good session** in the table). ``scanbomb:N``: N clients uploading, one after another, a
6300 x 6300 grey progressive JPEG whose smallest scan is repeated to 980 scans (about 200 kB; 30 s
to decode before a scan cap). Each phase also reports the slowest ``/healthz`` answer (probed every
0.25 s) and what the attackers got; the report gives the server log's size, to show that refusals
do not flood it. Crafted and scan-bomb uploads are refused from their header before they take a
queue place, and answered after the server's refusal delay (1 s), so each of those attackers sends
about one upload a second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from bench import machine, write_report

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


ATTACKS = ("slow", "idle", "crafted", "pipeline", "greedy", "scanbomb")
HEAD = b"POST /v1/landmarks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n"
PIPELINED = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 50
GREEDY_HOST = "127.0.0.2"  # the greedy client's own address (all of 127/8 is this machine): sessions are capped per address
GREEDY_FRAME_S = 14  # one frame per session this often: just inside the server's 15 s idle timeout


def scan_bomb_jpeg(size: int = 6300, scans: int = 980) -> bytes:
    """A grey progressive JPEG of ``size`` x ``size`` with its smallest scan repeated ``scans`` times
    (every scan is decoded over the whole image: 30 s before any scan cap); about 200 kB."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (size, size), 128).save(buffer, "JPEG", progressive=True, quality=75)
    data = buffer.getvalue()
    pos, found = 2, []  # the scans: (start of SOS, end of its entropy-coded data)
    while data[pos + 1] != 0xD9:
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if data[pos + 1] == 0xDA:
            end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
            while not (data[end] == 0xFF and data[end + 1] not in (0x00, *range(0xD0, 0xD8))):
                end += 1
            found.append((pos, end))
        pos = end
    start, end = min(found[1:], key=lambda scan: scan[1] - scan[0])  # after the first (DC) scan
    return data[:pos] + data[start:end] * (scans - len(found)) + data[pos:]


async def _attacker(kind: str, port: int, crafted: bytes, stats: Counter, stop: asyncio.Event) -> None:
    """One bad client, over and over until ``stop``; what it gets is counted in ``stats``."""
    if kind in ("crafted", "scanbomb"):
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=300) as client:
            while not stop.is_set():
                try:
                    response = await client.post("/v1/landmarks", content=crafted)
                    stats[f"answered {response.status_code}"] += 1
                except httpx.HTTPError as err:
                    stats[type(err).__name__] += 1
        return
    if kind == "pipeline":
        return await _pipeliner(port, stats, stop)
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError as err:
            stats[f"connect {type(err).__name__}"] += 1
            await asyncio.sleep(0.1)
            continue
        stats["connections"] += 1
        try:
            writer.write(HEAD + b"\r\n" if kind == "slow" else HEAD)  # idle: the head never ends
            while not stop.is_set():
                if kind == "slow":
                    writer.write(b"\xff")
                    await writer.drain()
                try:
                    answer = await asyncio.wait_for(reader.read(4096), 0.5)
                except TimeoutError:
                    continue
                stats[f"answered {answer[9:12].decode(errors='replace')}" if answer else "closed by the server"] += 1
                break  # answered or closed: reconnect at once
        except OSError:
            stats["closed by the server"] += 1
        finally:
            writer.close()


async def _pipeliner(port: int, stats: Counter, stop: asyncio.Event) -> None:
    """A connection that sends ``GET /healthz`` requests back to back (HTTP pipelining) and reads none of
    the answers, reopened at once when the server closes it; ``stats["longest held ms"]``: the longest
    one lived (those still open at the end included)."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except OSError as err:
            stats[f"connect {type(err).__name__}"] += 1
            await asyncio.sleep(0.1)
            continue
        stats["connections"] += 1
        writer.transport.pause_reading()  # never read: the answers stay in the kernel's buffers
        opened = loop.time()
        try:
            while not stop.is_set() and not writer.transport.is_closing():
                if writer.transport.get_write_buffer_size() < 65536:
                    writer.write(PIPELINED)
                await asyncio.sleep(0.1)
        except OSError:
            pass
        stats["closed by the server" if writer.transport.is_closing() else "still open at the end"] += 1
        stats["longest held ms"] = max(stats["longest held ms"], round((loop.time() - opened) * 1000))
        writer.transport.abort()


async def _greedy(port: int, sessions: int, frame: bytes, stats: Counter, stop: asyncio.Event) -> None:
    """One client (its own address) trying to hold ``sessions`` live-tracking sessions, keeping each
    alive with a frame every ``GREEDY_FRAME_S``; a refused or expired one is tried again each second."""
    transport = httpx.AsyncHTTPTransport(local_address=GREEDY_HOST)
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=300, transport=transport) as client:
        async def hold() -> None:
            while not stop.is_set():
                try:
                    opened = await client.post("/v1/track")
                    stats[f"open {opened.status_code}"] += 1
                    while opened.status_code == 201 and not stop.is_set():
                        answer = await client.post(f"/v1/track/{opened.json()['session']}", content=frame,
                                                   headers={"authorization": f"Bearer {opened.json()['token']}"})
                        stats[f"frame {answer.status_code}"] += 1
                        if answer.status_code != 200:
                            break
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), GREEDY_FRAME_S)
                except httpx.HTTPError as err:
                    stats[type(err).__name__] += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1)

        await asyncio.gather(*(hold() for _ in range(sessions)))


async def _good_session(url: str, frame: bytes, stop: asyncio.Event) -> Counter:
    """A good live-tracking client alongside the greedy one: opens a session (retrying each second while
    refused) and sends a frame a second; what it got."""
    got, started = Counter(), time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        auth = None
        while not stop.is_set():
            try:
                if auth is None:
                    opened = await client.post("/v1/track")
                    got[f"open {opened.status_code}"] += 1
                    if opened.status_code == 201:
                        session = opened.json()["session"]
                        auth = {"authorization": f"Bearer {opened.json()['token']}"}
                        got.setdefault("opened after ms", round((time.perf_counter() - started) * 1000))
                else:
                    answer = await client.post(f"/v1/track/{session}", content=frame, headers=auth)
                    got[f"frame {answer.status_code}"] += 1
                    if answer.status_code == 404:
                        auth = None
            except httpx.HTTPError as err:
                got[type(err).__name__] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1)
        if auth is not None:
            await client.delete(f"/v1/track/{session}", headers=auth)
    return got


async def _probe_health(url: str, stop: asyncio.Event) -> tuple[float, int]:
    """The slowest ``/healthz`` answer (seconds) while ``stop`` is unset, one probe every 0.25 s, and
    how many probes got no 200 (a fast 503 is no answer)."""
    slowest, failed = 0.0, 0
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                failed += (await client.get("/healthz")).status_code != 200
            except httpx.HTTPError:
                failed += 1
            slowest = max(slowest, time.perf_counter() - started)
            await asyncio.sleep(0.25)
    return slowest, failed


async def good_traffic(url: str, data: bytes, clients: int, requests: int, session: bool = False):
    """:func:`load` with ``/healthz`` probed alongside (and, with ``session``, a good live-tracking client);
    ``(latencies, statuses, wall s, (slowest /healthz s, failed probes), what the good session got)``."""
    stop = asyncio.Event()
    health = asyncio.create_task(_probe_health(url, stop))
    tracking = asyncio.create_task(_good_session(url, data, stop)) if session else None
    latencies, statuses, wall = await load(url, data, clients, requests)
    stop.set()
    return latencies, statuses, wall, await health, (await tracking if tracking else None)


def _attack_process(kind: str, count: int, port: int, image: bytes, stop, results) -> None:
    """``count`` attackers of ``kind`` in their own process (so that their work does not slow the good
    clients' event loop) until ``stop`` is set; puts what they got on ``results``."""
    crafted = scan_bomb_jpeg() if kind == "scanbomb" else b"\xff\xd8" + b"\xff" * 10_000_000 + image[2:]

    async def run() -> Counter:
        done, stats = asyncio.Event(), Counter()
        if kind == "greedy":  # one client trying to hold ``count`` sessions, a frame (the photo) per session per 14 s
            tasks = [asyncio.create_task(_greedy(port, count, image, stats, done))]
        else:
            tasks = [asyncio.create_task(_attacker(kind, port, crafted, stats, done)) for _ in range(count)]
        while not stop.is_set():
            await asyncio.sleep(0.1)
        done.set()
        await asyncio.wait(tasks, timeout=2)  # a moment to count what they hold at the end
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return stats

    results.put(dict(asyncio.run(run())))


def under_attack(url: str, port: int, image: bytes, data: bytes, clients: int, requests: int,
                 attack: tuple[str, int] | None, lead: float):
    """Good traffic with ``attack`` = ``(kind, attackers)`` running in another process (or none);
    ``(latencies, statuses, wall s, attacker stats, (slowest /healthz s, failed probes), good session)``."""
    if attack is None:
        latencies, statuses, wall, slowest, _ = asyncio.run(good_traffic(url, data, clients, requests))
        return latencies, statuses, wall, Counter(), slowest, None
    import multiprocessing

    context = multiprocessing.get_context("fork")  # Linux, as /proc is; no event loop runs in this process now
    stop, results = context.Event(), context.Queue()
    attacker = context.Process(target=_attack_process, args=(*attack, port, image, stop, results), daemon=True)
    attacker.start()
    try:
        time.sleep(lead)
        latencies, statuses, wall, slowest, session = asyncio.run(
            good_traffic(url, data, clients, requests, session=attack[0] == "greedy"))
    finally:
        stop.set()
    stats = Counter(results.get(timeout=120))
    attacker.join(30)
    return latencies, statuses, wall, stats, slowest, session


def parse_attacks(text: str) -> list[tuple[str, int]]:
    attacks = []
    for item in text.split(","):
        kind, _, count = item.partition(":")
        if kind not in ATTACKS or not count.isdigit() or not 0 < int(count) <= 5000:
            raise ValueError(f"--attack: {item!r} is not KIND:N with KIND one of {', '.join(ATTACKS)} and N in 1..5000")
        attacks.append((kind, int(count)))
    return attacks


def attack_report(args, argv, model: str, image: bytes, phases: list, log_bytes: int) -> tuple[str, bool]:
    """The Markdown report of an attack run and whether every attack kept >= 90 % of its baseline rate
    (answers 200 per second: a fast 503 is no service): ``phases`` alternate baseline, attack, baseline,
    ... baseline, and an attack's baseline is the mean of the two beside it."""
    rows, ok = [], True
    for number, (name, statuses, rate, latencies, stats, slowest, session) in enumerate(phases):
        p50, p95 = (np.percentile(latencies, [50, 95]) * 1000) if latencies else (float("nan"),) * 2
        errors = {k: v for k, v in statuses.items() if k != 200}
        if number % 2:  # an attack, between two baselines
            base_rate = (phases[number - 1][2] + phases[number + 1][2]) / 2
            ok &= rate >= 0.9 * base_rate
            share = f"{rate / base_rate:.0%} of {base_rate:.1f}"
        else:
            share = "-"
        got = ", ".join(f"{k}: {v}" for k, v in sorted(stats.items())) or "-"
        if session is not None:  # the greedy phase: what a good live-tracking client got alongside
            got += "; **good session**: " + (", ".join(f"{k}: {v}" for k, v in sorted(session.items())) or "nothing")
        rows.append(f"| {name} | {statuses.get(200, 0)} | {errors or 'none'} | {rate:.1f} | {share} | "
                    f"{p50:.0f} | {p95:.0f} | {slowest[0] * 1000:.0f}{f' ({slowest[1]} not 200)' if slowest[1] else ''} | "
                    f"{got} |")
    command = f"python -m bench.bench_service {' '.join(argv if argv is not None else sys.argv[1:])}"
    report = "\n".join([
        "# Service under attack", "", f"`{command}`", "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()} "
        f"(shared with whatever else runs), {HOST} only. Server: `facemark serve` defaults "
        f"(header timeout 10 s, limit_concurrency 500, minimum upload rate 8 kB/s after 5 s, upload timeout 30 s, "
        f"refusal delay 1 s), "
        f"model `{model}`, {args.workers} inference workers, queue {args.queue if args.queue is not None else args.clients}. "
        f"Good traffic: {args.requests} POSTs of `{Path(args.image).name}` ({len(image) / 1024:.0f} kB) per phase "
        f"from {args.clients} clients; the attack runs in another process, from {args.attack_lead:g} s before it until it ends.",
        "",
        "| phase | good 200 | good errors | good 200/s | of alone (the mean before and after) | p50 ms | p95 ms | "
        "slowest /healthz ms | attackers got |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|",
        *rows, "",
        f"Server log (stderr: uvicorn's and the app's lines at INFO and up; the access log goes to stdout, not kept) "
        f"after all phases: {log_bytes / 1024:.1f} kB.", "",
    ])
    return report, ok


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
    parser.add_argument("--attack", default=None, metavar="KIND:N[,KIND:N...]",
                        help=f"attack mode: one phase per attack ({', '.join(ATTACKS)}), each between two "
                             "phases of good traffic alone")
    parser.add_argument("--attack-lead", type=float, default=3, help="seconds an attack runs before good traffic starts")
    parser.add_argument("--out", default=None, help="the report (default bench/results/service.md, or "
                                                    "service_attack.md in attack mode)")
    args = parser.parse_args(argv)
    try:
        attacks = parse_attacks(args.attack) if args.attack else []
    except ValueError as err:
        parser.error(str(err))
    args.out = args.out or str(ROOT / "bench" / "results" / ("service_attack.md" if attacks else "service.md"))
    if not (0 < args.clients <= 1000 and 0 < args.requests <= 100_000):
        parser.error("keep it bounded: 1..1000 clients and 1..100000 requests")
    if args.upload_mb is not None and not 0 < args.upload_mb <= 100:
        parser.error("keep it bounded: --upload-mb in 0..100")
    image = Path(args.image).read_bytes()
    data = image + bytes(max(0, int(args.upload_mb * 2**20) - len(image))) if args.upload_mb else image

    port = free_port()
    url = f"http://{HOST}:{port}"
    if attacks:
        return _attack_main(args, argv, port, url, image, data, attacks)
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
        f"# Service load test\n\n`python -m bench.bench_service {' '.join(argv if argv is not None else sys.argv[1:])}` "
        f"on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}, "
        f"{HOST} only.\n\n"
        f"Server: model `{model}`, backend {args.backend or 'default'}, detector {args.detector or 'default'}, "
        f"{args.workers} inference workers, queue {args.queue if args.queue is not None else args.clients}. "
        f"Image: `{Path(args.image).name}` ({len(image) / 1024:.0f} kB"
        f"{f', padded to {len(data) / 2**20:.2f} MB' if len(data) > len(image) else ''}), raw body. Latency is "
        f"client-side, 200s only; req/s counts every answer.\n\n{table}\n\n"
        f"Non-200 answers: {errors or 'none'}. RSS growth from warm-up to the end: {rss_end - rss_warm:+.1f} MB; "
        f"peak RSS (VmHWM) {rss_peak_warm:.0f} MB before the measured run, {rss_peak:.0f} MB after it.\n"
    )
    out = write_report(args.out, report)
    print(f"wrote {out}")
    return 0 if ok == args.requests or args.upload_mb else 1  # with --upload-mb, refusals are the point


def _attack_main(args, argv, port: int, url: str, image: bytes, data: bytes, attacks: list[tuple[str, int]]) -> int:
    phases = []
    with tempfile.TemporaryFile() as log:
        server = start_server(args, port, log)
        try:
            model = httpx.get(f"{url}/healthz").json()["model"]
            asyncio.run(load(url, image, min(args.clients, args.workers * 2), args.warmup))
            for attack in [None, *(phase for each in attacks for phase in (each, None))]:
                latencies, statuses, wall, stats, slowest, session = under_attack(url, port, image, data, args.clients,
                                                                         args.requests, attack, args.attack_lead)
                name = "alone (no attack)" if attack is None else f"{attack[0]} x {attack[1]}"
                phases.append((name, statuses, statuses.get(200, 0) / wall, latencies, stats, slowest, session))
                print(f"{name}: {statuses.get(200, 0) / wall:.1f} answers 200/s, {dict(statuses)}, attackers {dict(stats)}",
                      flush=True)
        finally:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
        log_bytes = log.seek(0, os.SEEK_END)
    report, ok = attack_report(args, argv, model, image, phases, log_bytes)
    out = write_report(args.out, report)
    print(f"wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
