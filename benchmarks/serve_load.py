"""Load and fault benchmark of the web service (``robustfer serve``), over loopback only.

Starts ``robustfer serve --host 127.0.0.1 --port <free port>`` as a separate process (the
``--workers``, ``--queue``, ``--timeout`` and ``--graceful-shutdown`` given here, and each
``--server-opt``, are passed on), waits for ``GET /health``, then measures:

1. **load**: ``POST /predict`` of one photo (``--image``, default ``samples/grace_hopper.jpg``) at
   each ``--clients`` level (default 1 4 16 64 concurrent clients), each for
   ``--requests-per-level`` requests or ``--seconds``, whichever comes first: latency
   p50/p95/p99 over the 200 answers, requests/s (all answers) and 200s/s, and the status codes
   (200, 503, other). 503s are expected beyond ``workers + queue`` clients (the bounded queue
   answers them at once); a client that gets one waits ``--busy-pause`` s before its next request;
2. **faults under load**: while a background load of ``--fault-clients`` (4) clients runs, bad
   requests, ``--fault-rounds`` times each: a truncated JPEG, a zero-byte file, non-image bytes, a
   pixel-bomb PNG header (50000 x 50000, from ``samples/camera.png``), a 50 MB body (raw socket:
   the 413 must come before the body is sent), malformed multipart (wrong boundary, no boundary,
   no closing boundary), a JSON body and a text/plain body. Each must be answered 4xx with a JSON
   ``detail`` (its status and first 80 characters are recorded). At the same time a
   slowloris-style body (raw socket: headers with a Content-Length, then 1 byte every
   ``--slowloris-interval`` s for up to ``--slowloris-seconds``) records what the server does with
   it, and checks that the background load is still served meanwhile;
3. **soak**: ``--soak`` requests (10000) at ``--soak-clients`` (16) clients, the server's RSS
   sampled every ``--rss-every`` (1000) requests; fails when RSS grows more than
   ``--rss-growth-mb`` (100) from the baseline taken after the first ``--soak-warmup`` (500);
4. **end**: the server process is alive and ``/health`` answers; then SIGINT, and whether it
   exits cleanly (status 0) within ``--graceful-shutdown`` + 5 s.

Everywhere, crashes (connection errors, 5xx other than 503, the server process gone) and hung
requests (no answer within ``--client-timeout`` s) are counted; the verdict says "zero crashes,
zero hung requests" only when that is true. The server's RSS is read with psutil when installed,
else from ``/proc/<pid>/status`` (VmRSS). The exit status is 1, with the reasons printed, when any
check fails. A readable table goes to stdout; ``--json`` writes everything (machine, settings,
results, the server log's error lines).

The full run (about 10 minutes on a 2-core machine at about 20 requests/s, 8 of them the soak):

    python benchmarks/serve_load.py --json serve_load.json

A quick smoke run (about 30 s):

    python benchmarks/serve_load.py --clients 1 4 --requests-per-level 20 --soak 200 \\
        --soak-clients 4 --slowloris-seconds 5 --json /tmp/serve_load.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

try:
    import psutil
except ImportError:  # RSS from /proc instead
    psutil = None

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024
BOUNDARY = "robustferloadboundary"
PACKAGES = ("robustfer", "fastapi", "starlette", "uvicorn", "h11", "python-multipart", "httpx",
            "onnxruntime", "torch", "opencv-python-headless", "opencv-python", "numpy", "psutil")


# ----------------------------------------------------------------------------- machine and server
def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "load_average": [round(x, 2) for x in os.getloadavg()], "platform": platform.platform(),
            "python": platform.python_version(), "packages": versions,
            "rss_source": "psutil" if psutil else "/proc/<pid>/status VmRSS"}


def rss_mb(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MB, or None when it is gone."""
    if psutil is not None:
        try:
            return psutil.Process(pid).memory_info().rss / MB
        except psutil.Error:
            return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def serve_command() -> list[str]:
    exe = Path(sys.executable).parent / "robustfer"
    if exe.is_file():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from robustfer.cli import main; sys.exit(main())"]


class Server:
    """``robustfer serve`` in a child process on a free loopback port; its output goes to ``log``."""

    def __init__(self, args: argparse.Namespace, log: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = serve_command() + [
            "serve", "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(args.workers),
            "--queue", str(args.queue), "--timeout", str(args.timeout),
            "--graceful-shutdown", str(args.graceful_shutdown), *args.server_opt]
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(self.command, stdout=self._log_file, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss(self) -> float | None:
        return rss_mb(self.proc.pid) if self.alive() else None

    def wait_ready(self, seconds: float) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self.alive():
                raise SystemExit(f"the server exited with status {self.proc.returncode} before answering "
                                 f"/health; its output:\n{self.log.read_text(errors='replace')[-3000:]}")
            try:
                r = httpx.get(self.url + "/health", timeout=2)
                if r.status_code == 200:
                    return r.json()
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        self.proc.kill()
        raise SystemExit(f"the server did not answer /health within {seconds:g} s")

    def health(self) -> dict[str, Any]:
        try:
            r = httpx.get(self.url + "/health", timeout=10)
            return {"status": r.status_code, "ok": r.status_code == 200 and r.json().get("status") == "ok"}
        except (httpx.TransportError, ValueError) as e:
            return {"status": None, "ok": False, "error": f"{type(e).__name__}: {e}"}

    def stop(self, grace: float) -> dict[str, Any]:
        """SIGINT, then wait up to ``grace`` s; kill it if it is still running."""
        out: dict[str, Any] = {"signal": "SIGINT", "grace_s": grace}
        if not self.alive():
            out.update(exited=True, returncode=self.proc.returncode, seconds=0.0, clean=False,
                       note="the server had already exited")
        else:
            t = time.monotonic()
            self.proc.send_signal(signal.SIGINT)
            try:
                rc = self.proc.wait(grace)
                out.update(exited=True, returncode=rc, seconds=round(time.monotonic() - t, 2), clean=rc == 0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                out.update(exited=False, returncode=self.proc.returncode, seconds=grace, clean=False,
                           note="still running after the grace period: killed")
        self._log_file.close()
        return out

    def log_errors(self) -> list[str]:
        """Lines of the server's output that report an error (tracebacks, uvicorn ERROR lines)."""
        lines = self.log.read_text(errors="replace").splitlines()
        return [ln for ln in lines if ln.startswith(("ERROR", "Traceback", "CRITICAL")) or "Exception in" in ln]


# ----------------------------------------------------------------------------- requests and load
@dataclass
class Record:
    """One request: when it ended (monotonic), its status (None: no answer), latency, failure."""

    end: float
    status: int | None
    seconds: float
    error: str | None = None  # "hung" or the connection error
    busy_ok: bool | None = None  # a 503: did it carry Retry-After and a JSON detail?

    @property
    def crash(self) -> bool:
        return (self.status is None and self.error != "hung") or (self.status is not None and self.status >= 500
                                                                   and self.status != 503)

    @property
    def hung(self) -> bool:
        return self.error == "hung"


def post_photo(client: httpx.Client, url: str, image: bytes, name: str) -> Record:
    t = time.perf_counter()
    try:
        r = client.post(url + "/predict", files={"file": (name, image, "image/jpeg")})
        rec = Record(time.monotonic(), r.status_code, time.perf_counter() - t)
        if r.status_code == 503:
            rec.busy_ok = bool(r.headers.get("retry-after")) and "detail" in r.text
        return rec
    except httpx.TimeoutException:
        return Record(time.monotonic(), None, time.perf_counter() - t, "hung")
    except httpx.TransportError as e:
        return Record(time.monotonic(), None, time.perf_counter() - t, f"{type(e).__name__}: {e}"[:200])


def run_load(url: str, image: bytes, name: str, clients: int, requests: int, seconds: float, *,
             timeout: float, busy_pause: float, stop: threading.Event | None = None,
             on_each: Callable[[int], None] | None = None) -> tuple[list[Record], float]:
    """``clients`` threads, each with its own connection, posting until ``requests`` have been sent,
    ``seconds`` have passed or ``stop`` is set; ``on_each(n)`` after the n-th answer."""
    lock = threading.Lock()
    records: list[Record] = []
    issued = 0
    deadline = time.monotonic() + seconds

    def client_loop() -> None:
        nonlocal issued
        with httpx.Client(timeout=timeout) as client:
            while True:
                with lock:
                    if issued >= requests or time.monotonic() >= deadline or (stop and stop.is_set()):
                        return
                    issued += 1
                rec = post_photo(client, url, image, name)
                with lock:
                    records.append(rec)
                    n = len(records)
                if on_each:
                    on_each(n)
                if rec.status == 503 and busy_pause:
                    time.sleep(busy_pause)

    t = time.perf_counter()
    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return records, time.perf_counter() - t


def percentile(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


def summarize(records: list[Record], wall: float) -> dict[str, Any]:
    codes = Counter("no answer" if r.status is None else str(r.status) for r in records)
    ok = sorted(r.seconds * 1000 for r in records if r.status == 200)
    other = len(records) - codes["200"] - codes["503"]
    lat = {f"p{p}": percentile(ok, p) for p in (50, 95, 99)}
    lat.update(mean=sum(ok) / len(ok) if ok else None, max=ok[-1] if ok else None)
    return {"requests": len(records), "seconds": round(wall, 3),
            "requests_per_s": round(len(records) / wall, 2) if wall else None,
            "ok_per_s": round(len(ok) / wall, 2) if wall else None,
            "status": {"200": codes["200"], "503": codes["503"], "other": other}, "status_codes": dict(codes),
            "latency_ms": {k: None if v is None else round(v, 1) for k, v in lat.items()},
            "busy_without_retry_after": sum(r.busy_ok is False for r in records),
            "crashes": sum(r.crash for r in records), "hung": sum(r.hung for r in records),
            "errors": sorted({r.error for r in records if r.error})[:5]}


# ----------------------------------------------------------------------------- bad requests
def pixel_bomb_png(width: int, height: int) -> bytes:
    """``samples/camera.png`` with its header claiming ``width`` x ``height`` pixels."""
    png = bytearray((ROOT / "samples" / "camera.png").read_bytes())
    assert png[12:16] == b"IHDR"
    png[16:24] = struct.pack(">II", width, height)
    png[29:33] = struct.pack(">I", zlib.crc32(png[12:29]))
    return bytes(png)


def multipart(data: bytes, boundary: str = BOUNDARY, closed: bool = True) -> bytes:
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n").encode()
    return head + data + (f"\r\n--{boundary}--\r\n".encode() if closed else b"")


def bad_requests(image: bytes) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, expected status, httpx.post keywords) of the bad requests sent with httpx."""
    def upload(data: bytes, name: str = "x.jpg") -> dict[str, Any]:
        return {"files": {"file": (name, data, "image/jpeg")}}

    form = f"multipart/form-data; boundary={BOUNDARY}"
    return [
        ("truncated JPEG", "422", upload(image[: len(image) // 3])),
        ("zero-byte file", "422", upload(b"")),
        ("non-image bytes", "422", upload(b"%PDF-1.4 this is not an image\n" * 50, "report.pdf")),
        ("pixel bomb PNG 50000x50000", "422", upload(pixel_bomb_png(50000, 50000), "bomb.png")),
        ("multipart, wrong boundary", "400/422", {"content": multipart(image, "otherboundary"),
                                                  "headers": {"content-type": form}}),
        ("multipart, no boundary", "400/422", {"content": multipart(image),
                                               "headers": {"content-type": "multipart/form-data"}}),
        ("multipart, no closing boundary", "400/422", {"content": multipart(image, closed=False),
                                                       "headers": {"content-type": form}}),
        ("JSON body", "422", {"json": {"file": "grace_hopper.jpg"}}),
        ("text/plain body", "422", {"content": b"hello", "headers": {"content-type": "text/plain"}}),
    ]


def answer(name: str, expected: str, status: int | None, body: bytes | str | None, seconds: float,
           error: str | None = None) -> dict[str, Any]:
    detail = None
    if body:
        try:
            detail = json.loads(body).get("detail")
        except (ValueError, AttributeError):
            detail = None
    return {"fault": name, "expected": expected, "status": status,
            "detail": None if detail is None else str(detail)[:80], "seconds": round(seconds, 3),
            "error": error, "ok": status is not None and 400 <= status < 500 and bool(detail),
            "crash": (status is None and error != "hung") or (status is not None and status >= 500),
            "hung": error == "hung"}


def send_bad(client: httpx.Client, url: str, name: str, expected: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    t = time.perf_counter()
    try:
        r = client.post(url + "/predict", **kwargs)
        return answer(name, expected, r.status_code, r.content, time.perf_counter() - t)
    except httpx.TimeoutException:
        return answer(name, expected, None, None, time.perf_counter() - t, "hung")
    except httpx.TransportError as e:
        return answer(name, expected, None, None, time.perf_counter() - t, f"{type(e).__name__}: {e}"[:200])


def raw_upload(port: int, declared: int, chunk: bytes, interval: float, seconds: float,
               wait: float) -> dict[str, Any]:
    """POST /predict over a raw socket: headers declaring ``declared`` body bytes, then ``chunk``
    every ``interval`` s (0: as fast as the socket takes them) until the body is sent, the server
    answers or closes, or ``seconds`` pass; then up to ``wait`` s more for an answer."""
    head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data; "
            f"boundary={BOUNDARY}\r\nContent-Length: {declared}\r\n\r\n").encode()
    preamble = multipart(b"", closed=False)
    t0 = time.monotonic()
    sent, note = 0, None
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(head + preamble)
            sent = len(preamble)
            while sent < declared and time.monotonic() - t0 < seconds:
                readable, writable, _ = select.select([sock], [] if interval else [sock], [], interval or 1.0)
                if readable:  # an answer, or the server closed the connection
                    break
                if interval or writable:
                    sent += sock.send(chunk[: declared - sent])
        except OSError as e:  # e.g. reset while sending: the answer may still be readable
            note = f"{type(e).__name__} after sending {sent} bytes"
        sent_s = time.monotonic() - t0
        sock.settimeout(wait)
        status, body, error = None, b"", None
        try:
            resp = http.client.HTTPResponse(sock)
            resp.begin()
            status, body = resp.status, resp.read()
        except TimeoutError:
            error = "no answer"
        except (OSError, http.client.HTTPException) as e:
            error = f"closed without an answer ({type(e).__name__})"
    out = {"declared_bytes": declared, "sent_bytes": sent, "sending_s": round(sent_s, 2),
           "answer": status, "answer_after_s": round(time.monotonic() - t0, 2), "error": error, "note": note}
    return {**out, "body": body}


def slowloris(port: int, seconds: float, interval: float) -> dict[str, Any]:
    """A slow body (1 byte per ``interval`` s for up to ``seconds``): what does the server do?"""
    r = raw_upload(port, 100_000, b"\xff", interval, seconds, wait=2.0)
    body = r.pop("body")
    if r["answer"] is not None:
        r["outcome"] = f"answered {r['answer']} after {r['answer_after_s']:g} s"
    elif r["error"] == "no answer":
        r["outcome"] = (f"still waiting for the body after {r['answer_after_s']:g} s ({r['sent_bytes']} of "
                        f"{r['declared_bytes']} bytes sent): no body-read timeout; the benchmark closed it")
    else:
        r["outcome"] = f"{r['error']} after {r['answer_after_s']:g} s"
    r.update(answer("slowloris body", "4xx/open", r["answer"], body, r["answer_after_s"],
                    None if r["error"] == "no answer" else r["error"]))
    r["crash"] = r["answer"] is not None and r["answer"] >= 500
    return r


def big_body(port: int, size_mb: float, timeout: float) -> dict[str, Any]:
    """A body declaring ``size_mb`` MB sent as fast as the server takes it: 413 must come early."""
    declared = int(size_mb * MB)
    r = raw_upload(port, declared, b"\xff" * (64 * 1024), 0.0, timeout, wait=timeout)
    body = r.pop("body")
    out = answer(f"{size_mb:g} MB body", "413", r["answer"], body, r["answer_after_s"],
                 "hung" if r["error"] == "no answer" else r["error"])
    out["sent_bytes"] = r["sent_bytes"]
    out["read_whole_body"] = r["sent_bytes"] >= declared
    out["ok"] = out["ok"] and out["status"] == 413 and not out["read_whole_body"]
    return out


def faults_under_load(server: Server, args: argparse.Namespace, image: bytes) -> dict[str, Any]:
    stop = threading.Event()
    background: dict[str, Any] = {}

    def load() -> None:
        background["records"], background["wall"] = run_load(
            server.url, image, "load.jpg", args.fault_clients, 10**9, args.fault_seconds,
            timeout=args.client_timeout, busy_pause=args.busy_pause, stop=stop)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    time.sleep(1.0)  # the load is running
    slow: dict[str, Any] = {}

    def slow_body() -> None:
        slow["start"] = time.monotonic()
        slow.update(slowloris(server.port, args.slowloris_seconds, args.slowloris_interval))
        slow["end"] = time.monotonic()

    slow_thread = threading.Thread(target=slow_body, daemon=True)
    slow_thread.start()
    results = []
    cases = bad_requests(image)
    with httpx.Client(timeout=args.client_timeout) as client:
        for _ in range(args.fault_rounds):
            for name, expected, kwargs in cases:
                results.append(send_bad(client, server.url, name, expected, kwargs))
            results.append(big_body(server.port, args.big_mb, args.client_timeout))
    slow_thread.join()
    stop.set()
    loader.join()
    records = background["records"]
    during = [r for r in records if slow["start"] <= r.end <= slow["end"]]
    slow["served_meanwhile"] = sum(r.status == 200 for r in during)
    slow["failed_meanwhile"] = sum(r.crash or r.hung for r in during)
    slow["ok"] = (slow["served_meanwhile"] > 0 and slow["failed_meanwhile"] == 0 and not slow["crash"]
                  and (slow["status"] is None or slow["ok"]))
    for k in ("start", "end"):
        slow.pop(k)
    return {"bad_requests": results, "slowloris": slow, "background": summarize(records, background["wall"])}


# ----------------------------------------------------------------------------- soak
def soak(server: Server, args: argparse.Namespace, image: bytes) -> dict[str, Any]:
    warm = max(1, min(args.soak_warmup, args.soak // 2))
    samples: list[tuple[int, float | None]] = []

    def on_each(n: int) -> None:
        if n == warm or n % args.rss_every == 0:
            samples.append((n, server.rss()))
            print(f"  soak: {n} requests, server RSS {fmt(samples[-1][1], '.1f')} MB", file=sys.stderr, flush=True)

    records, wall = run_load(server.url, image, "soak.jpg", args.soak_clients, args.soak, args.soak_seconds,
                             timeout=args.client_timeout, busy_pause=args.busy_pause, on_each=on_each)
    samples.append((len(records), server.rss()))
    baseline = next((v for n, v in samples if n == warm), None)
    after = samples[-1][1]
    values = [v for _, v in samples if v is not None]
    growth = None if baseline is None or after is None else after - baseline
    return {**summarize(records, wall), "warmup_requests": warm,
            "rss_samples_mb": [[n, None if v is None else round(v, 1)] for n, v in samples],
            "rss_baseline_mb": None if baseline is None else round(baseline, 1),
            "rss_after_mb": None if after is None else round(after, 1),
            "rss_max_mb": round(max(values), 1) if values else None,
            "rss_growth_mb": None if growth is None else round(growth, 1),
            "rss_growth_limit_mb": args.rss_growth_mb,
            "rss_ok": growth is not None and growth <= args.rss_growth_mb}


# ----------------------------------------------------------------------------- report
def fmt(v: Any, spec: str = "") -> str:
    return "-" if v is None else format(v, spec)


def print_report(res: dict[str, Any]) -> None:
    m, s = res["machine"], res["settings"]
    print(f"\nrobustfer serve load benchmark: {m['cpu']}, {m['cores']} cores, python {m['python']}, "
          f"robustfer {m['packages'].get('robustfer', '?')}; load average at start {m['load_average']}")
    lim = res["server"]["limits"]
    print(f"server: workers {lim.get('workers')}, queue {lim.get('queue')}, timeout {lim.get('timeout_s')} s, "
          f"max upload {lim.get('max_upload_bytes', 0) / MB:g} MB; image {s['image']}")
    print("\nload: POST /predict, latency over the 200s")
    print(f"{'clients':>7} {'requests':>8} {'req/s':>7} {'200/s':>7} {'200':>6} {'503':>6} {'other':>6} "
          f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'crash':>5} {'hung':>5}")
    for lv in res["levels"]:
        st, lat = lv["status"], lv["latency_ms"]
        print(f"{lv['clients']:>7} {lv['requests']:>8} {fmt(lv['requests_per_s'], '.1f'):>7} "
              f"{fmt(lv['ok_per_s'], '.1f'):>7} {st['200']:>6} {st['503']:>6} {st['other']:>6} "
              f"{fmt(lat['p50'], '.1f'):>8} {fmt(lat['p95'], '.1f'):>8} {fmt(lat['p99'], '.1f'):>8} "
              f"{lv['crashes']:>5} {lv['hung']:>5}")
    f = res["faults"]
    bg = f["background"]
    print(f"\nfaults under a background load of {s['fault_clients']} clients "
          f"({bg['status']['200']} ok, {bg['status']['503']} busy, {bg['crashes']} crashes, {bg['hung']} hung):")
    print(f"{'request':<32} {'expected':>8} {'status':>8} {'ok':>4}  detail (first 80 characters)")
    seen: dict[str, list[dict[str, Any]]] = {}
    for r in f["bad_requests"]:
        seen.setdefault(r["fault"], []).append(r)
    for name, rs in seen.items():
        statuses = "/".join(sorted({fmt(r["status"]) for r in rs}))
        ok = sum(r["ok"] for r in rs)
        print(f"{name:<32} {rs[0]['expected']:>8} {statuses:>8} {ok}/{len(rs)}  "
              f"{rs[0]['detail'] or rs[0]['error'] or ''}")
        if "sent_bytes" in rs[0]:
            print(f"{'':<32} {'':>8} {'':>8} {'':>4}  answered after {max(r['sent_bytes'] for r in rs) / MB:.2f} "
                  "MB sent (at most)")
    sl = f["slowloris"]
    print(f"{'slowloris body':<32} {sl['expected']:>8} {fmt(sl['status']):>8} {'yes' if sl['ok'] else 'NO':>4}  "
          f"{sl['outcome']}; meanwhile {sl['served_meanwhile']} requests served, {sl['failed_meanwhile']} failed")
    if sl.get("detail"):
        print(f"{'':<57}{sl['detail']}")
    sk = res["soak"]
    if sk:
        print(f"\nsoak: {sk['requests']} requests at {s['soak_clients']} clients in {sk['seconds']:.0f} s "
              f"({fmt(sk['requests_per_s'], '.1f')} req/s; 200: {sk['status']['200']}, 503: {sk['status']['503']}, "
              f"other: {sk['status']['other']}; p50/p95/p99 {fmt(sk['latency_ms']['p50'], '.0f')}/"
              f"{fmt(sk['latency_ms']['p95'], '.0f')}/{fmt(sk['latency_ms']['p99'], '.0f')} ms)")
        print(f"  RSS after {sk['warmup_requests']} requests {fmt(sk['rss_baseline_mb'])} MB, at the end "
              f"{fmt(sk['rss_after_mb'])} MB, max {fmt(sk['rss_max_mb'])} MB: growth {fmt(sk['rss_growth_mb'])} MB "
              f"(limit {sk['rss_growth_limit_mb']:g} MB) -> {'ok' if sk['rss_ok'] else 'FAIL'}")
    rss = res["rss_mb"]
    print("\nserver RSS (MB): " + ", ".join(f"{k} {fmt(v)}" for k, v in rss.items()))
    end = res["end"]
    print(f"end: server alive {end['alive']}, /health {end['health']['status']}; SIGINT -> "
          f"{'exited' if end['shutdown']['exited'] else 'NOT exited'} with status {end['shutdown']['returncode']} "
          f"in {end['shutdown']['seconds']} s (clean: {end['shutdown']['clean']})")
    if res["server"]["log_errors"]:
        print(f"server log: {len(res['server']['log_errors'])} error line(s), e.g. {res['server']['log_errors'][0]}")
    print(f"\nverdict: {res['verdict']}")
    for p in res["problems"]:
        print(f"  FAIL: {p}")


def judge(res: dict[str, Any]) -> None:
    parts = [*res["levels"], res["faults"]["background"], *res["faults"]["bad_requests"]]
    if res["soak"]:
        parts.append(res["soak"])
    sl = res["faults"]["slowloris"]
    crashes = sum(int(p["crashes"] if "crashes" in p else p["crash"]) for p in parts) + int(sl["crash"])
    hung = sum(int(p["hung"]) for p in parts)
    end = res["end"]
    if not end["alive"]:
        crashes += 1
    problems = []
    if crashes:
        problems.append(f"{crashes} crash(es): connection errors, 5xx other than 503, or the server gone")
    if hung:
        problems.append(f"{hung} hung request(s): no answer within {res['settings']['client_timeout']} s")
    bad = [r for r in res["faults"]["bad_requests"] if not r["ok"]]
    if bad:
        problems.append("bad requests not refused with a 4xx and a JSON detail: "
                        + "; ".join(f"{r['fault']} -> {r['status']} {r['error'] or r['detail']}" for r in bad[:5]))
    if not sl["ok"]:
        problems.append(f"slowloris: {sl['outcome']}; {sl['served_meanwhile']} requests served meanwhile, "
                        f"{sl['failed_meanwhile']} failed")
    if res["soak"] and not res["soak"]["rss_ok"]:
        problems.append(f"RSS grew {res['soak']['rss_growth_mb']} MB during the soak (limit "
                        f"{res['soak']['rss_growth_limit_mb']:g} MB)")
    if not end["alive"] or not end["health"]["ok"]:
        problems.append(f"at the end the server is {'alive' if end['alive'] else 'gone'} and /health answered "
                        f"{end['health']['status']}")
    if not end["shutdown"]["clean"]:
        problems.append(f"SIGINT: {end['shutdown'].get('note') or 'exit status ' + str(end['shutdown']['returncode'])}")
    if res["server"]["log_errors"]:
        problems.append(f"{len(res['server']['log_errors'])} error line(s) in the server's log "
                        f"({res['server']['log']})")
    no_retry = sum(p.get("busy_without_retry_after", 0) for p in parts)
    if no_retry:
        problems.append(f"{no_retry} 503 answer(s) without a Retry-After header or a JSON detail")
    res["crashes"], res["hung"], res["problems"] = crashes, hung, problems
    res["verdict"] = (("zero crashes, zero hung requests" if not crashes and not hung
                       else f"{crashes} crash(es), {hung} hung request(s)")
                      + ("; all checks passed" if not problems else f"; {len(problems)} check(s) failed"))


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--image", default=str(ROOT / "samples" / "grace_hopper.jpg"), help="photo to post")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64], help="concurrency levels")
    ap.add_argument("--requests-per-level", type=int, default=300, help="requests per concurrency level")
    ap.add_argument("--seconds", type=float, default=60.0, help="longest time per concurrency level")
    ap.add_argument("--warmup", type=int, default=8, help="untimed requests before the levels")
    ap.add_argument("--busy-pause", type=float, default=0.05,
                    help="seconds a client waits after a 503 before its next request (0: none)")
    ap.add_argument("--client-timeout", type=float, default=30.0, help="a request unanswered this long is hung")
    ap.add_argument("--soak", type=int, default=10000, help="soak requests (0: no soak)")
    ap.add_argument("--soak-clients", type=int, default=16)
    ap.add_argument("--soak-seconds", type=float, default=3600.0, help="longest soak")
    ap.add_argument("--soak-warmup", type=int, default=500, help="requests before the RSS baseline "
                                                                 "(at most half the soak)")
    ap.add_argument("--rss-every", type=int, default=1000, help="sample the RSS every N soak requests")
    ap.add_argument("--rss-growth-mb", type=float, default=100.0, help="largest RSS growth after the warm-up")
    ap.add_argument("--fault-clients", type=int, default=4, help="background load during the faults")
    ap.add_argument("--fault-rounds", type=int, default=3, help="times each bad request is sent")
    ap.add_argument("--fault-seconds", type=float, default=300.0, help="longest fault phase")
    ap.add_argument("--big-mb", type=float, default=50.0, help="size of the oversized body")
    ap.add_argument("--slowloris-seconds", type=float, default=15.0, help="how long the slow body is sent")
    ap.add_argument("--slowloris-interval", type=float, default=1.0, help="seconds between its bytes")
    ap.add_argument("--workers", type=int, default=0, help="robustfer serve --workers (0: one per core)")
    ap.add_argument("--queue", type=int, default=16, help="robustfer serve --queue")
    ap.add_argument("--timeout", type=float, default=60.0, help="robustfer serve --timeout")
    ap.add_argument("--graceful-shutdown", type=float, default=10.0, help="robustfer serve --graceful-shutdown")
    ap.add_argument("--server-opt", action="append", default=[],
                    help="another robustfer serve option, e.g. --server-opt=--detector=haar (repeatable)")
    ap.add_argument("--startup-seconds", type=float, default=180.0, help="longest wait for /health")
    ap.add_argument("--json", help="write every setting and result here")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    image_path = Path(args.image)
    image = image_path.read_bytes()
    res: dict[str, Any] = {"machine": machine(), "settings": {**vars(args), "image": str(image_path)}}
    fd, name = tempfile.mkstemp(prefix="robustfer-serve-load-", suffix=".log")
    os.close(fd)
    log = Path(name)
    server = Server(args, log)
    rss: dict[str, float | None] = {}
    try:
        health = server.wait_ready(args.startup_seconds)
        res["server"] = {"command": server.command, "pid": server.proc.pid, "model": health.get("model"),
                         "detector": health.get("detector"), "limits": health.get("limits", {}),
                         "log": str(log)}
        rss["start"] = server.rss()
        run_load(server.url, image, image_path.name, 1, args.warmup, 120, timeout=args.client_timeout,
                 busy_pause=0)
        rss["after_warmup"] = server.rss()
        res["levels"] = []
        for clients in args.clients:
            records, wall = run_load(server.url, image, image_path.name, clients, args.requests_per_level,
                                     args.seconds, timeout=args.client_timeout, busy_pause=args.busy_pause)
            res["levels"].append({"clients": clients, **summarize(records, wall)})
            print(f"  {clients} clients: {len(records)} requests in {wall:.1f} s", file=sys.stderr, flush=True)
        rss["after_levels"] = server.rss()
        res["faults"] = faults_under_load(server, args, image)
        rss["after_faults"] = server.rss()
        print("  faults done", file=sys.stderr, flush=True)
        res["soak"] = soak(server, args, image) if args.soak else None
        rss["after_soak"] = server.rss()
        alive = server.alive()
        res["end"] = {"alive": alive, "health": server.health()}
    finally:
        res.setdefault("end", {"alive": server.alive(), "health": {"status": None, "ok": False}})
        res["end"]["shutdown"] = server.stop(args.graceful_shutdown + 5)
    values = [v for v in rss.values() if v is not None]
    res["rss_mb"] = {**{k: None if v is None else round(v, 1) for k, v in rss.items()},
                     "max_sampled": round(max(values), 1) if values else None}
    res["server"]["log_errors"] = server.log_errors()[:50]
    if not res["server"]["log_errors"]:  # keep the server's output only when it reports errors
        log.unlink()
        res["server"]["log"] = None
    judge(res)
    print_report(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
        print(f"wrote {args.json}")
    return 1 if res["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
