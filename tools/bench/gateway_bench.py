#!/usr/bin/env python3
"""Gateway benchmark, measured side by side in one run.

1. Status-poll throughput and p99 latency on loopback with wrk: this gateway serving
   `GET /api/v1/status/{id}` for a real completed task, and a minimal FastAPI + uvicorn app
   (the seed's stack) serving the same JSON from memory. Same wrk settings for both.
2. A 100 MB upload through `POST /api/v1/enhance`: the gateway's peak RSS growth.

Both servers run on the same 2 cores as wrk; the ratio is what matters.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

FASTAPI_APP = '''
from fastapi import FastAPI
app = FastAPI()
BODY = json.loads(os.environ["BENCH_BODY"])
@app.get("/api/v1/status/{task_id}")
async def status(task_id: str):
    return BODY
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except Exception:
            time.sleep(0.2)
    sys.exit(f"bench: {url} did not come up")


def rss_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def wrk(url: str, seconds: int, connections: int, threads: int) -> tuple[float, float]:
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        sys.exit(f"bench: {url} answered {non2xx.group(1)} non-2xx responses:\n{out}")
    return rps, p99


def multipart(path: Path, boundary: str) -> tuple[bytes, bytes]:
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"quality_level\"\r\n\r\nfast\r\n--{boundary}--\r\n".encode()
    return head, tail


def upload(base: str, path: Path) -> dict:
    """Streams the file in 1 MiB chunks (the client never holds it whole either)."""
    import http.client
    boundary = "purrifybench"
    head, tail = multipart(path, boundary)
    size = len(head) + path.stat().st_size + len(tail)
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    conn.putrequest("POST", "/api/v1/enhance")
    conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    conn.putheader("Content-Length", str(size))
    conn.endheaders()
    conn.send(head)
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            conn.send(chunk)
    conn.send(tail)
    resp = conn.getresponse()
    body = json.loads(resp.read())
    if resp.status != 202:
        sys.exit(f"bench: upload answered {resp.status}: {body}")
    return body


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", required=True, help="purrify-gateway (release build)")
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--upload-mb", type=int, default=100)
    args = p.parse_args()
    if not shutil.which("wrk"):
        sys.exit("bench: wrk is not installed (apt-get install wrk)")
    cache = Path(os.environ.get("PURRIFY_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "purrify")
    photo = cache / "photos" / "chelsea.png"
    procs: list[subprocess.Popen] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            env = dict(os.environ, RUST_LOG="warn")
            gw = subprocess.Popen([
                args.binary, "--addr", f"127.0.0.1:{port}", "--data-dir", str(tmp / "gw"),
                "--rate-limit", "0", "--uploads-per-minute", "100000", "--quality-levels", "fast",
            ], env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / "gw.log", "w"))
            procs.append(gw)
            wait_http(base + "/readyz")
            # A real task, completed by the real fast model, so polls read a real status.
            task_id = upload(base, photo)["task_id"]
            for _ in range(600):
                status = json.loads(urllib.request.urlopen(f"{base}/api/v1/status/{task_id}").read())
                if status["status"] in ("completed", "failed"):
                    break
                time.sleep(0.2)
            if status["status"] != "completed":
                sys.exit(f"bench: task did not complete: {status}")

            fport = free_port()
            app = tmp / "seed_app.py"
            app.write_text("import json, os\n" + FASTAPI_APP)
            py = sys.executable
            fa = subprocess.Popen(
                [py, "-m", "uvicorn", "seed_app:app", "--host", "127.0.0.1", "--port", str(fport),
                 "--workers", "2", "--log-level", "warning", "--no-access-log"],
                cwd=tmp, env=dict(os.environ, BENCH_BODY=json.dumps(status)),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            procs.append(fa)
            wait_http(f"http://127.0.0.1:{fport}/api/v1/status/{task_id}")

            g_rps, g_p99 = wrk(f"{base}/api/v1/status/{task_id}", args.seconds, args.connections, args.threads)
            f_rps, f_p99 = wrk(f"http://127.0.0.1:{fport}/api/v1/status/{task_id}", args.seconds, args.connections, args.threads)

            # 100 MB upload with the worker out of the picture: only the upload path is measured.
            gw.send_signal(signal.SIGTERM)
            gw.wait(timeout=60)
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            gw = subprocess.Popen([
                args.binary, "--addr", f"127.0.0.1:{port}", "--data-dir", str(tmp / "gw2"), "--embedded-worker", "false",
                "--rate-limit", "0", "--max-upload-bytes", str((args.upload_mb + 1) * 1024 * 1024),
            ], env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / "gw2.log", "w"))
            procs.append(gw)
            wait_http(base + "/readyz")
            big = tmp / "big.png"
            # Noise does not compress: a valid PNG of about the requested size.
            from PIL import Image
            import numpy as np
            side = int((args.upload_mb * 1024 * 1024 / 3) ** 0.5)
            Image.fromarray(np.random.default_rng(7).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(big, compress_level=0)
            before = rss_kb(gw.pid, "VmRSS")
            t0 = time.perf_counter()
            upload(base, big)
            elapsed = time.perf_counter() - t0
            peak = rss_kb(gw.pid, "VmHWM")
            size_mb = big.stat().st_size / 2**20

        print(f"gateway bench: {args.connections} connections, {args.threads} wrk threads, {args.seconds}s each, loopback, 2 cores shared with wrk")
        print(f"{'server':>28} {'req/s':>10} {'p99 ms':>8}")
        print(f"{'purrify-gateway':>28} {g_rps:10.0f} {g_p99:8.2f}")
        print(f"{'FastAPI+uvicorn (2 workers)':>28} {f_rps:10.0f} {f_p99:8.2f}")
        print(f"throughput ratio gateway/FastAPI: {g_rps / f_rps:.1f}x; p99 ratio: {g_p99 / f_p99:.2f}")
        print(f"upload {size_mb:.0f} MB in {elapsed:.1f}s: gateway RSS {before / 1024:.0f} MB before, peak {peak / 1024:.0f} MB "
              f"(growth {(peak - before) / 1024:.0f} MB)")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    main()
