#!/usr/bin/python3
"""Writes a small safetensors file by hand, for tests of weights checks.

usage: write-safetensors.py <out-file> <tensor>...

Each tensor is name=DTYPE:SHAPE[:FILL...] with SHAPE as 8x3x3x3 (or
"scalar"), DTYPE one of F32 F16 BF16 I64 I32, and FILL any of:
  var      values in [0.5, 2.5) (a BatchNorm running_var)
  nan@I    element I is NaN
  inf@I    element I is +Inf
  neg@I    element I is -0.5
Other values are small deterministic numbers in [-0.8, 0.8].
Needs nothing beyond the Python standard library (and safetensors_io.py
beside it).
"""
import math
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402 (beside this script)

PACK = {"F32": "<f", "F16": "<e", "I64": "<q", "I32": "<i"}


def encode(dtype, v):
    if dtype == "BF16":
        # The high half of the float32 (truncation suffices for tests).
        return struct.pack("<f", v)[2:]
    if dtype in ("I64", "I32"):
        return struct.pack(PACK[dtype], int(v) if math.isfinite(v) else 0)
    return struct.pack(PACK[dtype], v)


def values(n, fills):
    if "var" in fills:
        vals = [0.5 + (i % 4) * 0.5 for i in range(n)]
    else:
        vals = [((i * 37) % 17 - 8) / 10 for i in range(n)]
    for f in fills:
        if "@" not in f:
            continue
        what, at = f.split("@")
        vals[int(at)] = {"nan": math.nan, "inf": math.inf, "neg": -0.5}[what]
    return vals


def main(argv):
    out, specs = argv[0], argv[1:]
    entries = []
    for spec in specs:
        name, rest = spec.split("=", 1)
        parts = rest.split(":")
        dtype, shape, fills = parts[0], parts[1], parts[2:]
        dims = [] if shape == "scalar" else [int(d) for d in shape.split("x")]
        n = math.prod(dims)
        body = b"".join(encode(dtype, v) for v in values(n, fills))
        entries.append((name, dtype, dims, body))
    safetensors_io.write(out, entries)


if __name__ == "__main__":
    main(sys.argv[1:])
