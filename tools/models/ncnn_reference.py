#!/usr/bin/env python3
"""Run an ncnn model on the CPU and dump its output: the reference the ONNX conversion is
checked against (crates/ncnn2onnx/tests).

    ncnn_reference.py MODEL.param MODEL.bin INPUT.f32 OUTPUT.f32 --shape 1,3,H,W

INPUT.f32 is raw little-endian float32 NCHW (batch 1), RGB in [0, 1] as the Real-ESRGAN
ncnn models expect. OUTPUT.f32 receives the raw float32 output (NCHW, batch 1) and
OUTPUT.f32.json a sidecar {"shape": [1, C, H, W], "input_blob": ..., "output_blob": ...}.

The input and output blob names are read from the .param (the Input layer's blob, and the
one blob no layer consumes) unless given. Half-precision and bf16 storage/arithmetic are
switched off so the reference is a float32 computation like the ONNX one; --fast keeps
ncnn's defaults instead. Needs the `ncnn` and `numpy` packages (tools/python/venv.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def graph_endpoints(param_path: Path) -> tuple[str, str]:
    lines = [l.split() for l in param_path.read_text().splitlines() if l.strip()]
    if not lines or lines[0] != ["7767517"]:
        sys.exit(f"{param_path}: not an ncnn text .param (bad magic)")
    inputs, produced, consumed = [], [], set()
    for tok in lines[2:]:
        kind, n_in, n_out = tok[0], int(tok[2]), int(tok[3])
        ins, outs = tok[4 : 4 + n_in], tok[4 + n_in : 4 + n_in + n_out]
        consumed.update(ins)
        if kind == "Input":
            inputs += outs
        elif kind != "Split":
            produced += outs
    outputs = [b for b in produced if b not in consumed]
    if len(inputs) != 1 or len(outputs) != 1:
        sys.exit(f"{param_path}: expected one input and one output blob, found {inputs} and {outputs}; pass --input-blob/--output-blob")
    return inputs[0], outputs[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("param", type=Path)
    ap.add_argument("bin", type=Path)
    ap.add_argument("input", type=Path, help="raw float32 NCHW input")
    ap.add_argument("output", type=Path, help="raw float32 NCHW output (a .json sidecar is written next to it)")
    ap.add_argument("--shape", required=True, help="input shape N,C,H,W (N must be 1)")
    ap.add_argument("--input-blob")
    ap.add_argument("--output-blob")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--fast", action="store_true", help="keep ncnn's default fp16/bf16 options")
    args = ap.parse_args()

    import ncnn
    import numpy as np

    shape = tuple(int(v) for v in args.shape.split(","))
    if len(shape) != 4 or shape[0] != 1:
        sys.exit(f"--shape must be 1,C,H,W, got {args.shape}")
    data = np.fromfile(args.input, dtype="<f4")
    if data.size != np.prod(shape):
        sys.exit(f"{args.input}: {data.size} floats, but shape {shape} needs {int(np.prod(shape))}")
    chw = np.ascontiguousarray(data.reshape(shape)[0])

    in_blob, out_blob = graph_endpoints(args.param)
    in_blob = args.input_blob or in_blob
    out_blob = args.output_blob or out_blob

    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = args.threads
    if not args.fast:
        for opt in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic", "use_bf16_storage", "use_bf16_packed"):
            setattr(net.opt, opt, False)
    if net.load_param(str(args.param)) != 0:
        sys.exit(f"ncnn could not load {args.param}")
    if net.load_model(str(args.bin)) != 0:
        sys.exit(f"ncnn could not load {args.bin}")

    ex = net.create_extractor()
    if ex.input(in_blob, ncnn.Mat(chw)) != 0:
        sys.exit(f"ncnn rejected input blob {in_blob!r}")
    ret, out = ex.extract(out_blob)
    if ret != 0:
        sys.exit(f"ncnn failed to extract {out_blob!r} (code {ret})")
    result = np.array(out, dtype=np.float32)
    if result.ndim != 3:
        sys.exit(f"expected a [C,H,W] output, got shape {result.shape}")
    result = result[np.newaxis]

    args.output.parent.mkdir(parents=True, exist_ok=True)
    result.astype("<f4").tofile(args.output)
    sidecar = {"shape": list(result.shape), "input_blob": in_blob, "output_blob": out_blob}
    Path(str(args.output) + ".json").write_text(json.dumps(sidecar) + "\n")


if __name__ == "__main__":
    main()
