#!/usr/bin/python3
"""Reference bytes from PIL and torchvision for the image tests.

usage: pil-reference.py jobs <outdir> [<image>...]
       pil-reference.py bytes <image> decode|size <w> <h>|prepare <r> <w> <h>

`jobs` writes synthetic PNGs and JPEGs (every PNG colour type and depth,
interlaced, tRNS, ancillary chunks; JPEG 4:4:4, 4:2:2, 4:2:0, progressive,
grey, CMYK; odd, tiny and long sizes) into <outdir>/img, then writes
<outdir>/jobs.tsv: one line per check, "image, op, args, sha256 of PIL's
RGB bytes", for those images and the ones given. `bytes` prints one
reference to stdout, to show where a mismatch starts. Deterministic: the
random generator is seeded by each image's name.
"""

import hashlib
import os
import random
import struct
import sys
import zlib

import warnings

import numpy as np
from PIL import Image

ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4),
         (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def chunk(kind, data):
    crc = zlib.crc32(kind + data) & 0xffffffff
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def pack_rows(samples, depth):
    """(h, w, ch) integer samples -> PNG scanlines, filter type 0."""
    out = bytearray()
    for row in samples:
        out.append(0)
        flat = row.reshape(-1)
        if depth == 16:
            out += flat.astype(">u2").tobytes()
        elif depth == 8:
            out += flat.astype(np.uint8).tobytes()
        else:
            bits = np.unpackbits(flat.astype(np.uint8)[:, None], axis=1)
            out += np.packbits(bits[:, 8 - depth:].reshape(-1)).tobytes()
    return bytes(out)


def write_png(path, samples, depth, color, interlace=False, plte=None,
              trns=None, extra=True):
    h, w = samples.shape[:2]
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, int(interlace))
    if interlace:
        raw = b"".join(pack_rows(samples[y0::dy, x0::dx], depth)
                       for x0, y0, dx, dy in ADAM7
                       if samples[y0::dy, x0::dx].size)
    else:
        raw = pack_rows(samples, depth)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    if extra:
        # Chunks a reader must skip: no gamma or physical size is applied.
        data += chunk(b"gAMA", struct.pack(">I", 100000))
        data += chunk(b"pHYs", struct.pack(">IIB", 2835, 2835, 1))
        data += chunk(b"tEXt", b"Comment\x00made by pil-reference.py")
    if plte is not None:
        data += chunk(b"PLTE", bytes(plte))
    if trns is not None:
        data += chunk(b"tRNS", bytes(trns))
    data += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


def noise(rng, h, w, ch, top):
    """Gradients plus noise in 0..top, so resizing has something to average."""
    y, x = np.mgrid[0:h, 0:w]
    base = (x / max(w - 1, 1) + y / max(h - 1, 1)) / 2 * top
    n = np.random.default_rng(rng.randrange(1 << 32)).integers(
        0, top + 1, size=(h, w, ch))
    return np.clip((base[..., None] + n) // 2, 0, top).astype(np.int64)


def make_pngs(d):
    out = []
    for w, h in [(1, 1), (2, 3), (7, 5), (31, 17), (64, 48), (257, 129),
                 (300, 7), (5, 400)]:
        rng = random.Random("rgb%dx%d" % (w, h))
        p = os.path.join(d, "rgb8_%dx%d.png" % (w, h))
        write_png(p, noise(rng, h, w, 3, 255), 8, 2)
        out.append(p)
    rng = random.Random("png-kinds")
    w, h = 37, 23
    for depth in (1, 2, 4, 8, 16):
        p = os.path.join(d, "grey%d.png" % depth)
        write_png(p, noise(rng, h, w, 1, (1 << depth) - 1), depth, 0)
        out.append(p)
        p = os.path.join(d, "grey%d_adam7.png" % depth)
        write_png(p, noise(rng, h, w, 1, (1 << depth) - 1), depth, 0, True)
        out.append(p)
    for depth in (1, 2, 4, 8):
        # Fewer palette entries than indices: PIL falls back to grey.
        n = max(2, (1 << depth) - 3)
        plte = [rng.randrange(256) for _ in range(3 * n)]
        trns = [rng.randrange(256) for _ in range(n // 2)]
        p = os.path.join(d, "palette%d.png" % depth)
        write_png(p, noise(rng, h, w, 1, (1 << depth) - 1), depth, 3,
                  depth == 4, plte, trns)
        out.append(p)
    for depth in (8, 16):
        for color, name in ((2, "rgb"), (4, "greya"), (6, "rgba")):
            p = os.path.join(d, "%s%d.png" % (name, depth))
            ch = CHANNELS[color]
            write_png(p, noise(rng, h, w, ch, (1 << depth) - 1), depth, color,
                      color == 6)
            out.append(p)
    p = os.path.join(d, "rgb8_trns.png")
    write_png(p, noise(rng, h, w, 3, 255), 8, 2, trns=[0, 1, 0, 2, 0, 3])
    out.append(p)
    p = os.path.join(d, "grey16_trns.png")
    write_png(p, noise(rng, h, w, 1, 65535), 16, 0, trns=[0, 7])
    out.append(p)
    return out


def make_jpegs(d):
    out = []
    kinds = [("444", dict(subsampling=0, quality=90)),
             ("422", dict(subsampling=1, quality=80)),
             ("420", dict(subsampling=2, quality=75)),
             ("progressive", dict(progressive=True, quality=85)),
             ("optimized", dict(optimize=True, quality=95))]
    for w, h in [(1, 1), (33, 17), (64, 48), (301, 7), (9, 250), (640, 480)]:
        for name, opts in kinds:
            rng = random.Random("jpeg%s%dx%d" % (name, w, h))
            a = noise(rng, h, w, 3, 255).astype(np.uint8)
            p = os.path.join(d, "%s_%dx%d.jpg" % (name, w, h))
            Image.fromarray(a, "RGB").save(p, **opts)
            out.append(p)
        rng = random.Random("jpeg-grey%dx%d" % (w, h))
        p = os.path.join(d, "grey_%dx%d.jpg" % (w, h))
        a = noise(rng, h, w, 1, 255).astype(np.uint8)[..., 0]
        Image.fromarray(a, "L").save(p, quality=85)
        out.append(p)
        rng = random.Random("jpeg-cmyk%dx%d" % (w, h))
        p = os.path.join(d, "cmyk_%dx%d.jpg" % (w, h))
        a = noise(rng, h, w, 4, 255).astype(np.uint8)
        Image.fromarray(a, "CMYK").save(p, quality=90)
        out.append(p)
    return out


def reference(path, op, args):
    return reference_from(Image.open(path).convert("RGB"), op, args)


def sizes(rng, w, h, n, top):
    """n target sizes: both up and down, each direction on its own."""
    out = [(1, 1), (max(1, w // 3), h), (w, min(top, 2 * h + 1)),
           (min(top, 3 * w + 2), max(1, h // 2))]
    while len(out) < n:
        out.append((rng.randint(1, min(top, 2 * w + 3)),
                    rng.randint(1, min(top, 2 * h + 3))))
    return out[:n]


def jobs(outdir, images):
    img_dir = os.path.join(outdir, "img")
    os.makedirs(img_dir, exist_ok=True)
    synthetic = make_pngs(img_dir) + make_jpegs(img_dir)
    lines = []
    for path in synthetic + images:
        rng = random.Random(os.path.basename(path))
        w, h = Image.open(path).size
        small = path in synthetic
        checks = [("decode", [])]
        checks += [("size", list(s))
                   for s in sizes(rng, w, h, 10 if small else 6, 1200)]
        checks.append(("prepare", [256, 224, 224]))
        if small:
            checks.append(("prepare", [20, 30, 25]))
        if path.endswith("rgb8_64x48.png") or path.endswith("420_301x7.jpg"):
            # Many more random sizes on two images.
            checks += [("size", [rng.randint(1, 700), rng.randint(1, 700)])
                       for _ in range(60)]
        im = Image.open(path).convert("RGB")
        for op, args in checks:
            data = reference_from(im, op, args)
            sha = hashlib.sha256(data).hexdigest()
            lines.append("%s\t%s\t%s\t%s\n" % (
                path, op, " ".join(map(str, args)) or "-", sha))
    with open(os.path.join(outdir, "jobs.tsv"), "w") as f:
        f.writelines(lines)


def reference_from(im, op, args):
    if op == "size":
        im = im.resize((args[0], args[1]), Image.BILINEAR)
    elif op == "prepare":
        from torchvision import transforms as T
        t = T.Compose([T.Resize(args[0]), T.CenterCrop((args[2], args[1]))])
        im = t(im)
    return im.tobytes()


def main(argv):
    # PIL warns about palette transparency; the reference ignores it too.
    warnings.simplefilter("ignore")
    if len(argv) >= 3 and argv[1] == "jobs":
        jobs(argv[2], argv[3:])
    elif len(argv) >= 4 and argv[1] == "bytes":
        sys.stdout.buffer.write(
            reference(argv[2], argv[3], [int(a) for a in argv[4:]]))
    else:
        sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
