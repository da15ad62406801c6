#!/usr/bin/env python3
"""Execution-provider benchmark: the engine with each CPU execution provider against ncnn,
on the same weights, image, tiles and thread count, measured side by side in one run.

Peers, per model:
  engine/cpu       purrify-inference enhance --provider cpu (ONNX Runtime 1.31.1, CPU provider)
  engine/openvino  purrify-inference enhance --provider openvino (ONNX Runtime 1.24.1 with
                   OpenVINO, the build from the onnxruntime-openvino wheel)
  ncnn             PyPI `ncnn` with its default options on the original .param/.bin (the
                   runtime these weights ship for), cut into the engine's tiles in Python

Every run is its own process, after a warm-up run inside it; rounds are interleaved and the
peers' order rotates each round, so background load falls on every peer alike. Reported:
model time (inside the runtime, summed over tiles) in seconds per input megapixel, median
and spread (min-max) over the rounds; each peer's ratio to the fastest, from the medians and
as the spread of the per-round ratios; and each engine output's PSNR against ncnn's (same
tiles, 8-bit results), to show that a faster provider changes nothing visible.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_bench import cache_root  # noqa: E402

# quality level -> (model, native scale, the engine's tile pad for that level)
MODELS = {
    "fast": ("realesr-animevideov3-x2", 2, 6),
    "high": ("realesrgan-x4plus", 4, 10),
}
PEERS = ("engine/cpu", "engine/openvino", "ncnn")


def tiles(w: int, h: int, size: int, pad: int):
    """The engine's tile plan (crates/inference/src/pipeline/tiling.rs): cores of `size`,
    each padded by `pad` where the image extends."""
    for y in range(0, h, size):
        for x in range(0, w, size):
            x1, y1 = min(x + size, w), min(y + size, h)
            yield x, y, x1, y1, max(x - pad, 0), max(y - pad, 0), min(x1 + pad, w), min(y1 + pad, h)


def busy_seconds() -> float:
    """CPU time every process on the machine has used so far (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def run_with_others(cmd: list[str]) -> tuple[str, float]:
    """Runs cmd; returns its stdout and how many cores other processes kept busy meanwhile
    (the machine's CPU time minus the child's, over the wall time): the load it ran under."""
    before, start = busy_seconds(), time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        others = (busy_seconds() - before - usage.ru_utime - usage.ru_stime) / wall
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"bench: {' '.join(cmd[:3])} ... failed:\n{err.read().decode(errors='replace')}")
        return out.read().decode(), max(others, 0.0)


def ncnn_run(args: argparse.Namespace) -> None:
    """ncnn on the engine's tiles (runs in its own process)."""
    import ncnn
    import numpy as np
    from PIL import Image

    param = cache_root() / "models" / "ncnn" / f"{args.model}.param"
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = args.threads
    if net.load_param(str(param)) != 0 or net.load_model(str(param.with_suffix(".bin"))) != 0:
        sys.exit(f"bench: ncnn cannot load {param}")
    # Real-ESRGAN's ncnn graphs name their ends data/output.
    in_blob, out_blob = "data", "output"

    def run(chw):
        # The array and the Mat must outlive extract(): ncnn.Mat wraps the array's memory and
        # the extractor keeps only a shallow reference to the Mat (temporaries give garbage).
        data = np.ascontiguousarray(chw)
        mat = ncnn.Mat(data)
        ex = net.create_extractor()
        ex.input(in_blob, mat)
        ret, out = ex.extract(out_blob)
        if ret != 0:
            sys.exit(f"bench: ncnn extract failed ({ret})")
        return np.array(out, dtype=np.float32)

    run(np.zeros((3, 24, 24), np.float32))  # warm-up, as the engine does
    img = np.transpose(np.asarray(Image.open(args.input).convert("RGB"), dtype=np.float32) / 255.0, (2, 0, 1))
    _, h, w = img.shape
    s = args.scale
    out = np.zeros((h * s, w * s, 3), np.uint8)
    model_time = 0.0
    for x, y, x1, y1, px0, py0, px1, py1 in tiles(w, h, args.tile_size, args.pad):
        tile = img[:, py0:py1, px0:px1]
        t0 = time.perf_counter()
        res = run(tile)
        model_time += time.perf_counter() - t0
        oy, ox = (y - py0) * s, (x - px0) * s
        core = res[:, oy : oy + (y1 - y) * s, ox : ox + (x1 - x) * s]
        # The engine's rounding: (v * 255 + 0.5), clamped, truncated.
        out[y * s : y1 * s, x * s : x1 * s] = np.clip(np.transpose(core, (1, 2, 0)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    Image.fromarray(out).save(args.output)
    print(json.dumps({"model_s": model_time, "provider": "ncnn"}))


def psnr(a_path: Path, b_path: Path) -> float:
    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(a_path).convert("RGB"), dtype=np.float64)
    b = np.asarray(Image.open(b_path).convert("RGB"), dtype=np.float64)
    if a.shape != b.shape:
        sys.exit(f"bench: {a_path.name} is {a.shape}, {b_path.name} is {b.shape}")
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", help="purrify-inference (release build)")
    p.add_argument("--photo", default=str(cache_root() / "photos" / "solvay_conference_1927.jpg"))
    p.add_argument("--models", default="fast:1.0,high:0.1", help="quality:megapixels,... (x4plus is ~20x slower per pixel)")
    p.add_argument("--tile-size", type=int, default=400)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--repeat", type=int, default=3, help="interleaved rounds")
    # Internal: run ncnn in this process.
    p.add_argument("--ncnn", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--model", "--input", "--output"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    p.add_argument("--scale", type=int, help=argparse.SUPPRESS)
    p.add_argument("--pad", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.ncnn:
        ncnn_run(args)
        return
    if not args.binary:
        sys.exit("bench: --binary is required")

    from PIL import Image

    src = Image.open(args.photo).convert("RGB")
    load_before = os.getloadavg()
    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.models.split(","):
            quality, mp = spec.split(":")
            model, scale, pad = MODELS[quality]
            aspect = src.width / src.height
            h = int(round((float(mp) * 1e6 / aspect) ** 0.5))
            w = int(round(h * aspect))
            left, top = (src.width - w) // 2, (src.height - h) // 2
            crop = Path(tmp) / f"{quality}.png"
            src.crop((left, top, left + w, top + h)).save(crop)
            outputs = {peer: Path(tmp) / f"{quality}_{peer.replace('/', '_')}.png" for peer in PEERS}

            def command(peer: str) -> list[str]:
                if peer == "ncnn":
                    return [sys.executable, __file__, "--ncnn", "--model", model, "--input", str(crop),
                            "--output", str(outputs[peer]), "--scale", str(scale), "--tile-size", str(args.tile_size),
                            "--pad", str(pad), "--threads", str(args.threads)]
                return [args.binary, "enhance", str(crop), str(outputs[peer]), "--quality", quality, "--scale", str(scale),
                        "--tile-size", str(args.tile_size), "--tile-pad", str(pad), "--threads", str(args.threads),
                        "--provider", peer.split("/")[1], "--json"]

            times: dict[str, list[float]] = {peer: [] for peer in PEERS}
            loads: dict[str, list[float]] = {peer: [] for peer in PEERS}
            for r in range(max(1, args.repeat)):
                order = PEERS[r % len(PEERS):] + PEERS[: r % len(PEERS)]
                for peer in order:
                    out, others = run_with_others(command(peer))
                    loads[peer].append(others)
                    res = json.loads(out.strip().splitlines()[-1])
                    want = peer.split("/")[-1]
                    if res["provider"] != want:
                        sys.exit(f"bench: {peer} ran on {res['provider']} (is `make models` done?)")
                    times[peer].append(res["model_s"] / (w * h / 1e6))
            quality_psnr = {peer: psnr(outputs[peer], outputs["ncnn"]) for peer in PEERS if peer != "ncnn"}
            reports.append((quality, model, w, h, scale, pad, times, quality_psnr, loads))
    load_after = os.getloadavg()

    print(f"provider bench: {args.threads} threads, tile {args.tile_size}, photo {Path(args.photo).name} (centred crops), "
          f"{args.repeat} interleaved rounds; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print(f"{'model':<28} {'peer':<16} {'s/MP median':>12} {'spread':>15} {'x fastest':>9} {'per-round':>13} {'PSNR vs ncnn':>12}")
    for quality, model, w, h, scale, pad, times, quality_psnr, loads in reports:
        med = {peer: statistics.median(v) for peer, v in times.items()}
        best = min(med, key=med.get)
        for peer in PEERS:
            v = times[peer]
            rounds = [a / b for a, b in zip(v, times[best])]
            db = quality_psnr.get(peer)
            print(f"{f'{quality} {model}':<28} {peer:<16} {med[peer]:12.2f} {f'{min(v):.2f}-{max(v):.2f}':>15} "
                  f"{med[peer] / med[best]:9.2f} {f'{min(rounds):.2f}-{max(rounds):.2f}':>13} "
                  f"{'-' if db is None else f'{db:.1f} dB':>12}")
        print(f"{'':<28} ({w}x{h}, x{scale}, pad {pad}; fastest: {best})")
        # Every run, with the cores other processes kept busy during it (of os.cpu_count()),
        # so a reader can see what the machine's other load did to each peer.
        for peer in PEERS:
            runs = " ".join(f"{t:.2f}@{l:.1f}" for t, l in zip(times[peer], loads[peer]))
            print(f"{'':<28} {peer:<16} s/MP@other cores busy, by round: {runs}")


if __name__ == "__main__":
    main()
