#!/usr/bin/python3
"""Makes PyTorch files for the `resnet convert` tests, with what they must
convert to.

usage: make-torch-files.py <out-dir> <marker-path> [--large | --hostile]

For each case <name> in <out-dir>/cases.tsv (columns: name, input file,
expected model name, extra convert arguments):
  <input>             the file to convert (.pth, .th or .safetensors)
  <name>.ref.st       the tensors convert must write, bit for bit, as
                      safetensors (names stripped, num_batches_tracked
                      dropped, dtype as asked)
  <name>.logits       torchvision's logits for img224.png / img32.png with
                      those tensors, one a line
Hostile files are listed in hostile.tsv (name, file, expected error text);
each would create <marker-path> if anything in it were run.
Run with Debian's python3 (torch 1.13); deterministic (fixed seeds).
"""
import collections
import io
import os
import struct
import sys
import zipfile

import torch
import torchvision
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402 (beside this script)
from torchref import CifarResNet  # noqa: E402

OUT = sys.argv[1]
MARKER = sys.argv[2]
LARGE = "--large" in sys.argv[3:]
HOSTILE_ONLY = "--hostile" in sys.argv[3:]  # only what hostile files need

# ---------------------------------------------------------------------
# Models

def randomise(model, seed):
    """Random weights and BN statistics, so every tensor matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype != torch.float32:
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean") or name.endswith("bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith("weight") and t.dim() == 1:
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=g) *
                        (2.0 / fan_in) ** 0.5)
    return model.eval()


def family(kind, seed):
    if kind == "basic":
        m = ResNet(BasicBlock, [2, 1, 1, 1], num_classes=7)
    elif kind == "bottleneck":
        m = ResNet(Bottleneck, [1, 1, 1, 1], num_classes=7)
    elif kind == "resnext":
        m = ResNet(Bottleneck, [1, 1, 1, 1], num_classes=7, groups=4,
                   width_per_group=8)
    elif kind == "wide":
        m = ResNet(Bottleneck, [1, 1, 1, 1], num_classes=7,
                   width_per_group=128)
    elif kind == "cifar":
        m = CifarResNet(3)
    else:
        m = getattr(torchvision.models, kind)()
    return randomise(m, seed)


MODEL_NAMES = {"basic": "resnet12", "bottleneck": "resnet14",
               "resnext": "resnext14_4x8d", "wide": "wide_resnet14_2",
               "cifar": "cifar10-resnet20", "resnet18": "resnet18",
               "resnet50": "resnet50", "resnext50_32x4d": "resnext50_32x4d",
               "wide_resnet50_2": "wide_resnet50_2"}


# ---------------------------------------------------------------------
# Images and logits, preprocessed as the descriptions say

def make_images():
    g = torch.Generator().manual_seed(7)
    for name, (w, h) in (("img224.png", (300, 260)), ("img32.png", (40, 36))):
        px = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8)
        Image.fromarray(px.numpy(), "RGB").save(os.path.join(OUT, name))


def input_for(kind):
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    if kind == "cifar":
        img = Image.open(os.path.join(OUT, "img32.png")).convert("RGB")
        img = torchvision.transforms.CenterCrop(32)(img)
    else:
        img = Image.open(os.path.join(OUT, "img224.png")).convert("RGB")
        img = torchvision.transforms.Resize(256)(img)
        img = torchvision.transforms.CenterCrop(224)(img)
    x = torchvision.transforms.functional.to_tensor(img)
    return ((x - mean) / std).unsqueeze(0)


def logits(kind, tensors):
    m = family(kind, 0)
    sd = {k: v.float() for k, v in tensors.items()}
    missing, unexpected = m.load_state_dict(sd, strict=False)
    assert not unexpected and all("num_batches" in k for k in missing)
    with torch.no_grad():
        return m(input_for(kind))[0]


# ---------------------------------------------------------------------
# Cases

cases = []


def expected(sd, dtype=torch.float32):
    """What convert must write for state dict sd."""
    out = collections.OrderedDict()
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        if k.startswith("module."):
            k = k[len("module."):]
        out[k] = v.to(dtype) if v.is_floating_point() else v
    return out


def add(name, kind, obj, ref, args="", ext=".pth", save=None):
    path = os.path.join(OUT, name + ext)
    if save:
        save(obj, path)
    else:
        torch.save(obj, path)
    safetensors_io.write_tensors(os.path.join(OUT, name + ".ref.st"), ref)
    with open(os.path.join(OUT, name + ".logits"), "w") as f:
        for v in logits(kind, ref).tolist():
            f.write("%.9g\n" % v)
    cases.append((name, name + ext, MODEL_NAMES[kind], args))


def legacy(obj, path):
    torch.save(obj, path, _use_new_zipfile_serialization=False)


def protocol4(obj, path):
    torch.save(obj, path, pickle_protocol=4)


def st_save(obj, path):
    safetensors_io.write_tensors(path, obj)


def make_cases():
    kinds = ["basic", "bottleneck", "resnext", "wide", "cifar", "resnet18"]
    if LARGE:
        kinds += ["resnet50", "resnext50_32x4d", "wide_resnet50_2"]
    if HOSTILE_ONLY:
        kinds = ["cifar"]
    for i, kind in enumerate(kinds):
        sd = family(kind, 100 + i).state_dict()
        add(kind + "-zip", kind, sd, expected(sd))
        if kind == "cifar":
            add(kind + "-legacy", kind, sd, expected(sd), save=legacy)
    if HOSTILE_ONLY:
        return

    # The variants use the small CIFAR network: they test the reader.
    kind = "cifar"
    sd = family(kind, 200).state_dict()
    ref = expected(sd)
    add("module-prefix", kind,
        collections.OrderedDict(("module." + k, v) for k, v in sd.items()),
        ref)
    add("module-prefix-legacy", kind,
        collections.OrderedDict(("module." + k, v) for k, v in sd.items()),
        ref, save=legacy)
    add("checkpoint-state-dict", kind,
        {"epoch": 3, "arch": "resnet20", "best_acc": 91.5,
         "state_dict": sd, "optimizer": {"state": {}, "lr": [0.1, 0.01]}},
        ref)
    add("checkpoint-model", kind, {"model": sd, "step": 1000}, ref)
    add("protocol4", kind, sd, ref, save=protocol4)
    add("params", kind,
        collections.OrderedDict(list(family(kind, 200).named_parameters()) +
                                list(family(kind, 200).named_buffers())),
        ref)
    add("safetensors-prefix", kind,
        collections.OrderedDict(("module." + k, v) for k, v in ref.items()),
        ref, ext=".safetensors", save=st_save)

    # Half and bfloat16 files widen to float32; float64 narrows.
    for dtype, tag in ((torch.float16, "f16"), (torch.bfloat16, "bf16"),
                       (torch.float64, "f64")):
        low = collections.OrderedDict(
            (k, v.to(dtype) if v.is_floating_point() else v)
            for k, v in sd.items())
        add("saved-" + tag, kind, low, expected(low))
        if tag != "f64":
            add("saved-%s-legacy" % tag, kind, low, expected(low),
                save=legacy)
            add("to-" + tag, kind, sd, expected(sd, dtype),
                "--dtype " + tag)
    basic = family("basic", 300).state_dict()
    add("basic-to-bf16", "basic", basic, expected(basic, torch.bfloat16),
        "--dtype bf16")

    # Views: a transposed slice with an offset, and two tensors sharing
    # one storage.
    view = collections.OrderedDict(sd)
    base = torch.randn(view["linear.weight"].shape[1], 12,
                       generator=torch.Generator().manual_seed(5))
    view["linear.weight"] = base.t()[1:11]
    assert not view["linear.weight"].is_contiguous()
    c = view["bn1.weight"].numel()
    shared = torch.rand(2 * c, generator=torch.Generator().manual_seed(6))
    view["bn1.weight"] = shared[:c]
    view["bn1.bias"] = shared[c:]
    add("views", kind, view, expected(view))
    add("views-legacy", kind, view, expected(view), save=legacy)


# ---------------------------------------------------------------------
# Hostile files

hostile = []


class Payload:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


def zip_with(path, pkl, records=()):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/version", "3\n")
        for name, data in records:
            z.writestr("archive/data/" + name, data)


def replace_in_pickle(src, old, new):
    """src's zip archive with data.pkl's BINUNICODE old replaced by new."""
    with zipfile.ZipFile(src) as z:
        top = z.namelist()[0].split("/")[0]
        pkl = z.read(top + "/data.pkl")
        recs = [(n[len(top) + 6:], z.read(n)) for n in z.namelist()
                if n.startswith(top + "/data/")]
    enc = lambda s: b"X" + struct.pack("<I", len(s)) + s.encode()
    assert enc(old) in pkl
    return pkl.replace(enc(old), enc(new), 1), recs


def add_hostile(name, path, err):
    hostile.append((name, os.path.basename(path), err))


def make_hostile():
    import builtins
    import os as os_mod
    sd = family("cifar", 400).state_dict()
    cmd = "touch '%s'" % MARKER

    p = os.path.join(OUT, "hostile-system.pth")
    torch.save({"conv1.weight": sd["conv1.weight"],
                "x": Payload(os_mod.system, cmd)}, p)
    add_hostile("system", p, "refusing global 'posix.system' in '%s': "
                "not needed by a state_dict" % p)

    p = os.path.join(OUT, "hostile-system-legacy.pth")
    torch.save({"x": Payload(os_mod.system, cmd)}, p,
               _use_new_zipfile_serialization=False)
    add_hostile("system-legacy", p, "refusing global 'posix.system' in "
                "'%s': not needed by a state_dict" % p)

    p = os.path.join(OUT, "hostile-eval.pth")
    torch.save(collections.OrderedDict(
        [("linear.bias", sd["linear.bias"]),
         ("x", Payload(builtins.eval, "open(%r, 'w')" % MARKER))]), p)
    # Protocol 2 spells builtins the Python 2 way.
    add_hostile("eval", p, "refusing global '__builtin__.eval' in '%s': not "
                "needed by a state_dict" % p)

    p = os.path.join(OUT, "hostile-protocol4.pth")
    torch.save({"x": Payload(builtins.eval, "open(%r, 'w')" % MARKER)}, p,
               pickle_protocol=4)
    add_hostile("protocol4", p, "refusing global 'builtins.eval' in '%s': "
                "not needed by a state_dict" % p)

    n = 100000
    p = os.path.join(OUT, "hostile-deep.pth")
    zip_with(p, b"\x80\x02" + b"]" * n + b"a" * (n - 1) + b".")
    add_hostile("deep", p, "pickle in '%s' nests deeper than 128 levels" % p)

    p = os.path.join(OUT, "hostile-marks.pth")
    zip_with(p, b"\x80\x02" + b"(" * n + b".")
    add_hostile("marks", p, "pickle in '%s' nests deeper than 256 levels" % p)

    good = os.path.join(OUT, "hostile-good.pth")
    torch.save({"linear.bias": sd["linear.bias"]}, good)
    for tag, key, err in (
            ("key-parent", "../../../etc/passwd",
             "storage key '../../../etc/passwd' in '%s' names no record in "
             "the archive"),
            ("key-missing", "7",
             "storage key '7' in '%s' names no record in the archive")):
        pkl, recs = replace_in_pickle(good, "0", key)
        p = os.path.join(OUT, "hostile-%s.pth" % tag)
        zip_with(p, pkl, recs)
        add_hostile(tag, p, err % p)

    # A name that is not UTF-8 would make a header JSON parsers refuse.
    pkl, recs = replace_in_pickle(good, "linear.bias", "linear.bias")
    bad = b"linear.\xff\xfebias"
    pkl = pkl.replace(b"X\x0b\x00\x00\x00linear.bias",
                      b"X" + struct.pack("<I", len(bad)) + bad, 1)
    p = os.path.join(OUT, "hostile-utf8.pth")
    zip_with(p, pkl, recs)
    add_hostile("utf8", p, "'%s': tensor name is not valid UTF-8 "
                "('linear.\\xff\\xfebias')" % p)

    h = b'{"a\xff":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    h += b" " * (-len(h) % 8)
    p = os.path.join(OUT, "hostile-utf8.safetensors")
    open(p, "wb").write(struct.pack("<Q", len(h)) + h + bytes(4))
    add_hostile("utf8-safetensors", p, "'%s': tensor name is not valid "
                "UTF-8 ('a\\xff')" % p)

    # A record shorter than its storage says.
    pkl, recs = replace_in_pickle(good, "0", "0")
    p = os.path.join(OUT, "hostile-short-record.pth")
    zip_with(p, pkl, [(k, v[:-4]) for k, v in recs])
    add_hostile("short-record", p, "bad record 'archive/data/0' in '%s' "
                "(expected 40 bytes, got 36)" % p)

    # A stride-0 view repeating one element to 4 GiB, and a zip bomb.
    p = os.path.join(OUT, "hostile-repeat.pth")
    torch.save({"conv1.weight": torch.zeros(1).expand(1 << 20, 1 << 10)}, p)
    add_hostile("repeat", p, "tensor 'conv1.weight' in '%s' repeats its "
                "storage to 4294967296 bytes (at most 1073741824)" % p)
    # Three views of one element, 90 MiB each: each is allowed, together
    # they pass the cap of twice the storages (4 bytes) plus 256 MiB.
    p = os.path.join(OUT, "hostile-repeat-total.pth")
    one = torch.zeros(1)
    torch.save({k: one.expand(90 << 18) for k in "abc"}, p)
    add_hostile("repeat-total", p, "tensors in '%s' would take more than "
                "268435464 bytes (at most twice their storages plus 256 MiB)"
                % p)
    p = os.path.join(OUT, "hostile-zip-bomb.pth")
    with zipfile.ZipFile(good) as z:
        top = z.namelist()[0].split("/")[0]
        pkl = z.read(top + "/data.pkl").replace(
            b"K\x0a", b"J" + struct.pack("<i", 1 << 22), 1)
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/data/0", bytes(4 << 22))
    add_hostile("zip-bomb", p, "cannot read 'archive/data/0' in '%s': it "
                "claims to expand more than 64fold" % p)

    # Truncated files: in the pickle and in the storages.
    src = os.path.join(OUT, "cifar-legacy.pth")
    data = open(src, "rb").read()
    for tag, cut in (("legacy-pickle", 400), ("legacy-storage",
                                              len(data) - 100)):
        p = os.path.join(OUT, "hostile-truncated-%s.pth" % tag)
        open(p, "wb").write(data[:cut])
        add_hostile("truncated-" + tag, p, "'%s'" % p)
    # A legacy storage whose element count is -1: named signed.
    import pickle
    import pickletools
    f = io.BytesIO(data)
    for _ in range(5):
        start = f.tell()
        for _op in pickletools.genops(f):
            pass
    key, pos = pickle.loads(data[start:f.tell()])[0], f.tell()
    want = struct.unpack("<q", data[pos:pos + 8])[0]
    p = os.path.join(OUT, "hostile-legacy-numel.pth")
    open(p, "wb").write(data[:pos] + struct.pack("<q", -1) + data[pos + 8:])
    add_hostile("legacy-numel", p, "bad storage '%s' in '%s' (expected %d "
                "elements, got -1)" % (key, p, want))
    p = os.path.join(OUT, "hostile-truncated-zip.pth")
    data = open(os.path.join(OUT, "cifar-zip.pth"), "rb").read()
    open(p, "wb").write(data[:len(data) // 2])
    add_hostile("truncated-zip", p, "'%s'" % p)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    make_images()
    make_cases()
    make_hostile()
    if HOSTILE_ONLY:
        cases.clear()
    with open(os.path.join(OUT, "cases.tsv"), "w") as f:
        for row in cases:
            f.write("\t".join(row) + "\n")
    with open(os.path.join(OUT, "hostile.tsv"), "w") as f:
        for row in hostile:
            f.write("\t".join(row) + "\n")


main()
