#!/usr/bin/env python3
"""Accounts benchmark, measured side by side in one run (issue 10).

1. Status polls of a task, anonymous (seed 000: the task id is the capability) next to
   authenticated (`Authorization: Bearer <JWT>` on the user's own task: signature check,
   token-version check from the in-memory cache, ownership check). Same wrk settings,
   interleaved rounds, medians and the ratio.
2. Login throughput with the shipped argon2id parameters (m = 19 MiB, t = 2, p = 1) through
   `POST /api/auth/login`, and the latency of a wrong password next to an unknown email
   (they must cost the same: an unknown email is verified against a decoy hash).

Everything runs on the same cores as wrk; ratios are what matter.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

LOGIN_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"email": "bench@example.com", "password": "bench password 42"}'
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, body: dict | None = None, token: str | None = None, data: bytes | None = None, ctype: str | None = None) -> tuple[int, dict]:
    headers = {}
    if body is not None:
        data, ctype = json.dumps(body).encode(), "application/json"
    if ctype:
        headers["Content-Type"] = ctype
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def upload(base: str, photo: Path, token: str | None) -> str:
    boundary = "purrifybench"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + photo.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    status, reply = call(f"{base}/api/v1/enhance", token=token, data=body, ctype=f"multipart/form-data; boundary={boundary}")
    if status != 202:
        sys.exit(f"bench: upload answered {status}: {reply}")
    return reply["task_id"]


def wrk(url: str, seconds: int, connections: int, threads: int, extra: list[str]) -> tuple[float, float]:
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency", *extra, url],
                         capture_output=True, text=True, check=True).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        sys.exit(f"bench: {url} answered {non2xx.group(1)} non-2xx responses:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    return rps, float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def timed_login(base: str, email: str, password: str) -> float:
    t0 = time.perf_counter()
    status, _ = call(f"{base}/api/auth/login", {"email": email, "password": password})
    if status != 401:
        sys.exit(f"bench: a failed login answered {status}")
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", required=True, help="purrify-gateway (release build)")
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    cache = Path(os.environ.get("PURRIFY_CACHE") or Path.home() / ".cache" / "purrify")
    photo = cache / "photos" / "chelsea.png"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        gw = subprocess.Popen([
            args.binary, "--addr", f"127.0.0.1:{port}", "--data-dir", str(tmp / "gw"), "--embedded-worker", "false",
            "--rate-limit", "0", "--uploads-per-minute", "100000",
            "--logins-per-minute-per-address", "0", "--logins-per-minute-per-account", "0",
        ], env=dict(os.environ, RUST_LOG="warn"), stdout=subprocess.DEVNULL, stderr=open(tmp / "gw.log", "w"))
        try:
            for _ in range(600):
                try:
                    if call(f"{base}/readyz")[0] == 200:
                        break
                except Exception:
                    time.sleep(0.1)
            status, reg = call(f"{base}/api/auth/register", {"email": "bench@example.com", "password": "bench password 42"})
            if status != 201:
                sys.exit(f"bench: register answered {status}: {reg}")
            token = reg["data"]["access_token"]
            anon_id, owned_id = upload(base, photo, None), upload(base, photo, token)
            anon, auth = [], []
            for _ in range(args.rounds):
                anon.append(wrk(f"{base}/api/v1/status/{anon_id}", args.seconds, args.connections, args.threads, []))
                auth.append(wrk(f"{base}/api/v1/status/{owned_id}", args.seconds, args.connections, args.threads,
                                ["-H", f"Authorization: Bearer {token}"]))
            a_rps, b_rps = statistics.median(r for r, _ in anon), statistics.median(r for r, _ in auth)
            a_p99, b_p99 = statistics.median(p for _, p in anon), statistics.median(p for _, p in auth)

            # Failed logins, one at a time, alternating which goes first (the second of a pair
            # runs warmer): the unknown email pays the same hash as the wrong password.
            wrong, unknown = [], []
            for i in range(40):
                pair = [("wrong", "bench@example.com"), ("unknown", "nobody@example.com")]
                for name, email in pair if i % 2 == 0 else reversed(pair):
                    (wrong if name == "wrong" else unknown).append(timed_login(base, email, "not the password 1"))
            lua = tmp / "login.lua"
            lua.write_text(LOGIN_LUA)
            l_rps, l_p99 = wrk(f"{base}/api/auth/login", args.seconds * 2, 8, 2, ["-s", str(lua)])
        finally:
            gw.send_signal(signal.SIGTERM)
            gw.wait(timeout=60)
    spread = lambda xs: f"{min(xs):.0f}-{max(xs):.0f}"
    print(f"auth bench: {args.connections} connections, {args.threads} wrk threads, {args.rounds} interleaved rounds of {args.seconds}s, loopback")
    print(f"{'status poll':>34} {'req/s (median)':>15} {'range':>13} {'p99 ms':>7}")
    print(f"{'anonymous (id as capability)':>34} {a_rps:15.0f} {spread([r for r, _ in anon]):>13} {a_p99:7.2f}")
    print(f"{'Bearer JWT, own task':>34} {b_rps:15.0f} {spread([r for r, _ in auth]):>13} {b_p99:7.2f}")
    print(f"authenticated/anonymous throughput: {b_rps / a_rps:.2f} (target >= 0.90)")
    print(f"logins (argon2id m=19 MiB t=2 p=1, 8 connections): {l_rps:.1f}/s, p99 {l_p99:.0f} ms")
    print(f"failed login latency, median of 40: wrong password {statistics.median(wrong):.1f} ms, "
          f"unknown email {statistics.median(unknown):.1f} ms")


if __name__ == "__main__":
    main()
