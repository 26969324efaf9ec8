#!/usr/bin/python3
"""st-compare.py <got.safetensors> <want.safetensors>: the same tensors
(names, dtypes, shapes) with bit-identical data; order and metadata may
differ. Prints the first difference and exits 1. Standard library only.

st-compare.py --manifest <got.safetensors> <MANIFEST.json>: shapes, sums
and first values as the shared cases' manifest lists them (F32/F16/BF16).
"""
import json
import struct
import sys


def load(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, h in header.items():
        start, end = h["data_offsets"]
        out[name] = (h["dtype"], h["shape"], data[8 + n + start:8 + n + end])
    return out


def floats(dtype, raw):
    if dtype == "F32":
        return struct.unpack("<%df" % (len(raw) // 4), raw)
    if dtype == "F16":
        return struct.unpack("<%de" % (len(raw) // 2), raw)
    if dtype == "BF16":
        return [struct.unpack("<f", b"\0\0" + raw[i:i + 2])[0]
                for i in range(0, len(raw), 2)]
    raise ValueError("dtype " + dtype)


def first_diff(a, b, dtype):
    size = {"F32": 4, "F16": 2, "BF16": 2}.get(dtype, 1)
    for i in range(0, min(len(a), len(b)), size):
        if a[i:i + size] != b[i:i + size]:
            fa = floats(dtype, a[i:i + size])[0] if size > 1 else a[i]
            fb = floats(dtype, b[i:i + size])[0] if size > 1 else b[i]
            return "element %d: expected %r, got %r" % (i // size, fb, fa)
    return "lengths %d and %d" % (len(a), len(b))


def compare(got_path, want_path):
    got, want = load(got_path), load(want_path)
    if set(got) != set(want):
        return "tensor names differ: missing %s, unexpected %s" % (
            sorted(set(want) - set(got))[:5], sorted(set(got) - set(want))[:5])
    for name, (dtype, shape, raw) in want.items():
        g = got[name]
        if g[0] != dtype or g[1] != shape:
            return "%s: expected %s %s, got %s %s" % (name, dtype, shape,
                                                      g[0], g[1])
        if g[2] != raw:
            return "%s: %s" % (name, first_diff(g[2], raw, dtype))
    return None


def manifest(got_path, manifest_path):
    got = load(got_path)
    want = json.load(open(manifest_path))["tensors"]
    if set(got) != set(want):
        return "tensor names differ: %s vs %s" % (sorted(got), sorted(want))
    for name, m in want.items():
        dtype, shape, raw = got[name]
        v = floats(dtype, raw)
        if shape != m["shape"] or sum(v) != m["sum"] or v[0] != m["first"]:
            return "%s: expected shape %s sum %r first %r, got %s %r %r" % (
                name, m["shape"], m["sum"], m["first"], shape, sum(v), v[0])
    return None


if sys.argv[1] == "--manifest":
    problem = manifest(sys.argv[2], sys.argv[3])
else:
    problem = compare(sys.argv[1], sys.argv[2])
if problem:
    print("%s: %s" % (sys.argv[-2], problem))
    sys.exit(1)
