#!/usr/bin/env python3
"""Engine benchmark: the Rust pipeline against a Python reference, same model, same image,
same thread count, measured side by side in one run.

The reference is what the seed's GPU servers ran, minus the GPU: onnxruntime + numpy +
Pillow with Real-ESRGAN's own tile procedure (tiles with a pad, each output cropped and
placed). Both sides run ONNX Runtime's CPU provider (the engine with `--provider cpu`), so
the comparison is of the pipelines; provider_bench.py compares runtimes. Each run is a
separate process so its peak RSS is its own (os.wait4).

Prints, per photo size: wall time of each side and the ratio Rust/Python, pipeline overhead
(time outside model execution as % of model time) on each side, and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cache_root() -> Path:
    if os.environ.get("PURRIFY_CACHE"):
        return Path(os.environ["PURRIFY_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "purrify"


def run_measured(cmd: list[str]) -> tuple[str, float, int]:
    """Runs cmd, returns (stdout, wall seconds, the child's own peak RSS in bytes)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            sys.exit(f"bench: {' '.join(cmd[:3])} ... failed:\n{err.read().decode(errors='replace')}")
        return out.read().decode(), wall, usage.ru_maxrss * 1024


def reference(args: argparse.Namespace) -> None:
    """Python reference pipeline (runs in its own process)."""
    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    # Warm-up, as the Rust worker does before it is ready.
    sess.run(None, {name: np.zeros((1, 3, 24, 24), np.float32)})

    t0 = time.perf_counter()
    img = np.asarray(Image.open(args.input).convert("RGB"), dtype=np.float32) / 255.0
    img = np.transpose(img, (2, 0, 1))[None]
    _, c, h, w = img.shape
    s = args.scale
    out = np.zeros((1, c, h * s, w * s), np.float32)
    tile, pad = args.tile_size, args.pad
    model_time = 0.0
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            x1, y1 = min(x + tile, w), min(y + tile, h)
            px0, py0 = max(x - pad, 0), max(y - pad, 0)
            px1, py1 = min(x1 + pad, w), min(y1 + pad, h)
            inp = np.ascontiguousarray(img[:, :, py0:py1, px0:px1])
            m0 = time.perf_counter()
            res = sess.run(None, {name: inp})[0]
            model_time += time.perf_counter() - m0
            oy, ox = (y - py0) * s, (x - px0) * s
            out[:, :, y * s : y1 * s, x * s : x1 * s] = res[:, :, oy : oy + (y1 - y) * s, ox : ox + (x1 - x) * s]
    arr = (np.clip(np.transpose(out[0], (1, 2, 0)), 0, 1) * 255.0).round().astype(np.uint8)
    Image.fromarray(arr).save(args.output, quality=92)
    total = time.perf_counter() - t0
    print(json.dumps({"total_s": total, "model_s": model_time, "width": w * s, "height": h * s}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", help="purrify-inference (release build)")
    p.add_argument("--photo", default=str(cache_root() / "photos" / "solvay_conference_1927.jpg"))
    p.add_argument("--megapixels", default="1,4")
    p.add_argument("--model-name", default="realesr-animevideov3-x2")
    p.add_argument("--quality", default="fast", help="Rust quality level that selects the same model")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--tile-size", type=int, default=400)
    p.add_argument("--pad", type=int, default=10)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--repeat", type=int, default=3, help="runs per side, interleaved; the fastest counts")
    # Internal: run the reference in this process.
    p.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--input", help=argparse.SUPPRESS)
    p.add_argument("--output", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.reference:
        reference(args)
        return
    if not args.binary:
        sys.exit("bench: --binary is required")

    from PIL import Image

    model = cache_root() / "models" / f"{args.model_name}.onnx"
    if not model.exists():
        sys.exit(f"bench: {model} is missing; run `make models`")
    src = Image.open(args.photo).convert("RGB")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mp in [float(m) for m in args.megapixels.split(",")]:
            # A centred crop of a real photo with the photo's aspect ratio.
            aspect = src.width / src.height
            h = int(round((mp * 1e6 / aspect) ** 0.5))
            w = int(round(h * aspect))
            if w > src.width or h > src.height:
                sys.exit(f"bench: {args.photo} is too small for {mp} MP")
            left, top = (src.width - w) // 2, (src.height - h) // 2
            crop = Path(tmp) / f"crop_{mp}mp.png"
            src.crop((left, top, left + w, top + h)).save(crop)

            rust_cmd = [
                args.binary, "enhance", str(crop), str(Path(tmp) / f"rust_{mp}.jpg"),
                "--quality", args.quality, "--scale", str(args.scale),
                "--tile-size", str(args.tile_size), "--tile-pad", str(args.pad),
                "--threads", str(args.threads), "--provider", "cpu", "--json",
            ]
            py_cmd = [
                sys.executable, __file__, "--reference", "--model", str(model),
                "--input", str(crop), "--output", str(Path(tmp) / f"py_{mp}.jpg"), "--scale", str(args.scale),
                "--tile-size", str(args.tile_size), "--pad", str(args.pad), "--threads", str(args.threads),
            ]
            # Interleaved runs, fastest of each: background load hits both sides alike.
            r = py = None
            rust_rss = py_rss = 0
            for _ in range(max(1, args.repeat)):
                out, _, rss = run_measured(rust_cmd)
                cand = json.loads(out.strip().splitlines()[-1])
                if r is None or cand["total_s"] < r["total_s"]:
                    r = cand
                rust_rss = max(rust_rss, rss)
                out, _, rss = run_measured(py_cmd)
                cand = json.loads(out.strip().splitlines()[-1])
                if py is None or cand["total_s"] < py["total_s"]:
                    py = cand
                py_rss = max(py_rss, rss)
            rows.append((mp, w, h, r, rust_rss, py, py_rss))

    print(f"engine bench: model {args.model_name}, scale x{args.scale}, tile {args.tile_size}, pad {args.pad}, "
          f"{args.threads} threads, photo {Path(args.photo).name} (centred crops), fastest of {args.repeat}")
    print(f"{'size':>12} {'rust s':>8} {'python s':>9} {'rust/py':>8} {'rust ovh':>9} {'py ovh':>8} {'rust RSS':>9} {'py RSS':>8}")
    for mp, w, h, r, rr, py, pr in rows:
        r_ovh = (r["total_s"] - r["model_s"]) / r["model_s"] * 100
        p_ovh = (py["total_s"] - py["model_s"]) / py["model_s"] * 100
        print(f"{f'{w}x{h}':>12} {r['total_s']:8.2f} {py['total_s']:9.2f} {r['total_s'] / py['total_s']:8.3f} "
              f"{r_ovh:8.1f}% {p_ovh:7.1f}% {rr / 2**20:7.0f}MB {pr / 2**20:6.0f}MB")


if __name__ == "__main__":
    main()
