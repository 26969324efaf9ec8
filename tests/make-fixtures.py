#!/usr/bin/python3
"""Generates the PyTorch side of the parity tests, deterministically.

Run it with Debian's /usr/bin/python3 (torch 1.13, torchvision 0.14,
PIL 9.4). Every model is built with torch itself (torchvision's ResNet, or
the akamaster CIFAR ResNet of torchref.py), never from our JSON
descriptions, so a misreading of the format cannot hide on both sides.

    make-fixtures.py families <out-dir>
        One small random-weight model per family: <family>.safetensors,
        <family>.json (description), <family>.png, <family>.jpg and
        <family>.expected.json (torchvision's logits for both images);
        also seed-resnet-224.expected.json, the seed-resnet weights with
        the shipped description's 256/224 preprocessing.
    make-fixtures.py full <out-dir> <image>...
        torchvision's resnet18, resnet50, resnext50_32x4d and
        wide_resnet50_2 with random weights: <name>.safetensors and
        <name>.expected.json for the images (ImageNet preprocessing).
        A lone "-" for the images reads their paths from stdin.
    make-fixtures.py cifar <weights> <out.json> <image>...
        An akamaster CIFAR-10 ResNet (depth from the tensors) loaded from
        a safetensors file: logits for each image (no resize, crop 32,
        ImageNet mean/std).

Expected files hold {"model": ..., "images": [{"file": <as given>,
"logits": [...]}, ...]} with each float32 logit written exactly.
"""

import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torchvision
from PIL import Image
from torchvision import transforms
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402 (beside this script)
from torchref import CifarResNet  # noqa: E402

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

# ---------------------------------------------------------------------
# safetensors: written by safetensors_io, read here (as float32 and int64
# tensors).

NP_DTYPES = {"F32": "<f4", "I64": "<i8"}


def save_safetensors(path, tensors):
    safetensors_io.write_tensors(path, tensors, {"format": "pt"})


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        arr = np.frombuffer(data[base + begin:base + end],
                            dtype=NP_DTYPES[info["dtype"]])
        out[name] = torch.from_numpy(arr.copy()).reshape(info["shape"])
    return out

# ---------------------------------------------------------------------
# Models


def move_stride_to_1x1(model):
    """Original-paper bottlenecks: the stride on conv1, not on conv2."""
    for m in model.modules():
        if isinstance(m, Bottleneck) and m.conv2.stride != (1, 1):
            m.conv1.stride = m.conv2.stride
            m.conv2.stride = (1, 1)
    return model


def three_stage(model, fc_in, num_classes):
    """Drops torchvision's layer4: layer1..3, then the head."""
    model.layer4 = nn.Identity()
    model.fc = nn.Linear(fc_in, num_classes)
    return model


def randomise_bn(model, gen, shape):
    """
    Gives every BatchNorm statistics and an affine transform far from the
    identity, so BN folding is really exercised, while activations stay
    near unit scale: first measure real statistics on a batch of noise,
    then perturb them per channel.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: exactly this batch's stats
    model.train()
    with torch.no_grad():
        model(torch.randn((4,) + shape, generator=gen))
        for bn in bns:
            c = bn.num_features
            u = lambda lo, hi: lo + (hi - lo) * torch.rand(c, generator=gen)
            std = bn.running_var.sqrt()
            bn.running_var.mul_(u(0.5, 2.0))
            bn.running_mean.add_(0.3 * std * torch.randn(c, generator=gen))
            sign = torch.where(torch.rand(c, generator=gen) < 0.1, -1.0, 1.0)
            bn.weight.copy_(sign * u(0.5, 1.5))
            bn.bias.copy_(0.2 * torch.randn(c, generator=gen))
            bn.momentum = 0.1
            assert (bn.running_var > 0).all()
    model.eval()
    return model

# ---------------------------------------------------------------------
# Descriptions (models/<name>.json, see FORMAT.md)


def imagenet_stem():
    return {"conv": {"name": "conv1", "channels": 64, "kernel": 7,
                     "stride": 2, "padding": 3},
            "bn": {"name": "bn1"},
            "maxpool": {"kernel": 3, "stride": 2, "padding": 1}}


def stages(blocks, planes):
    return [{"name": "layer%d" % (i + 1), "blocks": b, "planes": p,
             "stride": 1 if i == 0 else 2}
            for i, (b, p) in enumerate(zip(blocks, planes))]


def description(name, text, crop, resize, stem, block, stage_list, fc_name,
                n_classes=10):
    return {
        "name": name,
        "description": text,
        "input": {"channels": 3, "height": crop, "width": crop},
        "preprocess": {"resize": resize, "crop": crop,
                       "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
        "stem": stem,
        "block": block,
        "stages": stage_list,
        "head": {"pool": "avg", "fc": {"name": fc_name,
                                       "classes": n_classes}},
        "bn_eps": 1e-5,
        "labels": "ten-classes.txt",
        "weights": name + ".safetensors",
    }


def bottleneck_block(groups=1, width=64, stride_on="3x3"):
    return {"type": "bottleneck", "groups": groups, "width_per_group": width,
            "stride_on": stride_on, "shortcut": "projection"}


BASIC = {"type": "basic", "shortcut": "projection"}
PLANES4 = [64, 128, 256, 512]

# Each family: (seed, torch model builder, description, image sizes).
# Bottleneck nets have two blocks in layer1 so an identity shortcut
# around a bottleneck is covered too.
FAMILIES = {
    "basic": (
        1, lambda: ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10),
        description("basic", "basic blocks [1,1,1,1], random weights", 64, 72,
                    imagenet_stem(), BASIC, stages([1, 1, 1, 1], PLANES4),
                    "fc"),
        [(97, 83), (64, 120)]),
    "bottleneck": (
        2, lambda: ResNet(Bottleneck, [2, 1, 1, 1], num_classes=10),
        description("bottleneck", "bottleneck [2,1,1,1], random weights",
                    64, 72, imagenet_stem(), bottleneck_block(),
                    stages([2, 1, 1, 1], PLANES4), "fc"),
        [(80, 80), (131, 77)]),
    "bottleneck-1x1": (
        2, lambda: move_stride_to_1x1(
            ResNet(Bottleneck, [2, 1, 1, 1], num_classes=10)),
        description("bottleneck-1x1",
                    "bottleneck [2,1,1,1], stride on the first 1x1", 64, 72,
                    imagenet_stem(), bottleneck_block(stride_on="1x1"),
                    stages([2, 1, 1, 1], PLANES4), "fc"),
        [(80, 80), (131, 77)]),
    "resnext": (
        3, lambda: ResNet(Bottleneck, [2, 1, 1, 1], num_classes=10,
                          groups=4, width_per_group=4),
        description("resnext", "ResNeXt [2,1,1,1] 4x4d, random weights",
                    64, 72, imagenet_stem(), bottleneck_block(4, 4),
                    stages([2, 1, 1, 1], PLANES4), "fc"),
        [(72, 100), (90, 91)]),
    "wide": (
        4, lambda: ResNet(Bottleneck, [2, 1, 1, 1], num_classes=10,
                          width_per_group=128),
        description("wide", "wide ResNet [2,1,1,1], width 128", 64, 72,
                    imagenet_stem(), bottleneck_block(1, 128),
                    stages([2, 1, 1, 1], PLANES4), "fc"),
        [(66, 70), (150, 99)]),
    "cifar-a": (
        5, lambda: CifarResNet(2),
        description("cifar-a", "CIFAR ResNet-14, option-A shortcuts",
                    32, 0,
                    {"conv": {"name": "conv1", "channels": 16, "kernel": 3,
                              "stride": 1, "padding": 1},
                     "bn": {"name": "bn1"}},
                    {"type": "basic", "shortcut": "pad"},
                    stages([2, 2, 2], [16, 32, 64]), "linear"),
        [(41, 37), (32, 32)]),
    "seed-resnet": (
        6, lambda: three_stage(ResNet(BasicBlock, [2, 2, 2, 2],
                                      num_classes=10), 256, 10),
        description("seed-resnet", "ImageNet stem, 3 stages of 2 basic "
                    "blocks (64/128/256), random weights", 64, 72,
                    imagenet_stem(), BASIC, stages([2, 2, 2], [64, 128, 256]),
                    "fc"),
        [(88, 75), (70, 140)]),
}

TEN_CLASSES = ["zero", "one", "two", "three", "four", "five", "six",
               "seven", "eight", "nine"]

# ---------------------------------------------------------------------
# Images and torchvision's pipeline


def make_image(rng, w, h):
    """A smooth random picture with some edges and grain, as uint8 RGB."""
    coarse = rng.integers(0, 256, (max(h // 12, 2), max(w // 12, 2), 3))
    img = Image.fromarray(coarse.astype(np.uint8)).resize((w, h),
                                                          Image.BICUBIC)
    arr = np.asarray(img).astype(np.float64)
    arr += rng.normal(0, 10, arr.shape)
    yy, xx = np.mgrid[0:h, 0:w]
    arr[(xx + 2 * yy) % 23 < 3] = 255 * (rng.random() > 0.5)  # stripes
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def pipeline(resize, crop, mean, std):
    steps = [transforms.Resize(resize)] if resize else []
    steps += [transforms.CenterCrop(crop), transforms.ToTensor(),
              transforms.Normalize(mean, std)]
    return transforms.Compose(steps)


def logits_for(model, tf, paths):
    """torchvision's reference: PIL open, RGB, transforms, eval, no_grad."""
    batch = []
    for p in paths:
        with Image.open(p) as img:
            batch.append(tf(img.convert("RGB")))
    model.eval()
    with torch.no_grad():
        out = model(torch.stack(batch))
    assert torch.isfinite(out).all()
    return [[float(v) for v in row] for row in out]


def write_expected(path, name, files, logits):
    doc = {"model": name,
           "images": [{"file": f, "logits": l} for f, l in zip(files, logits)]}
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f)
        f.write("\n")
    os.replace(path + ".tmp", path)


def state_dict_for_file(model, keep_batches_tracked=True):
    sd = model.state_dict()
    return {k: v for k, v in sd.items()
            if keep_batches_tracked or not k.endswith("num_batches_tracked")}

# ---------------------------------------------------------------------
# Commands


def cmd_families(out):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "ten-classes.txt"), "w") as f:
        f.write("\n".join(TEN_CLASSES) + "\n")
    results = {}
    for name, (seed, build, desc, sizes) in FAMILIES.items():
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)
        crop = desc["preprocess"]["crop"]
        model = randomise_bn(build(), gen, (3, crop, crop))

        base = os.path.join(out, name)
        make_image(rng, *sizes[0]).save(base + ".png")
        make_image(rng, *sizes[1]).save(base + ".jpg", quality=90)
        files = [name + ".png", name + ".jpg"]

        pp = desc["preprocess"]
        tf = pipeline(pp["resize"], pp["crop"], pp["mean"], pp["std"])
        logits = logits_for(model, tf, [os.path.join(out, f) for f in files])
        results[name] = logits

        with open(base + ".json", "w") as f:
            json.dump(desc, f, indent=2)
            f.write("\n")
        # akamaster's checkpoints carry no num_batches_tracked; the others
        # keep them as torch saves them, so the loader must skip them.
        save_safetensors(base + ".safetensors",
                         state_dict_for_file(model, name != "cifar-a"))
        write_expected(base + ".expected.json", name, files, logits)
        if name == "seed-resnet":
            # The same weights through the shipped models/seed-resnet.json,
            # which takes 224 x 224 crops of a 256 resize.
            tf = pipeline(256, 224, IMAGENET_MEAN, IMAGENET_STD)
            logits = logits_for(model, tf,
                                [os.path.join(out, f) for f in files])
            write_expected(base + "-224.expected.json", name, files, logits)

    # The stride_on test cannot pass by ignoring stride_on: the two nets
    # share their weights, so their logits must differ well beyond the
    # tolerance the comparison allows.
    a = np.array(results["bottleneck"])
    b = np.array(results["bottleneck-1x1"])
    assert np.abs(a - b).max() > 1e-2 * np.abs(a).max(), "stride_on inert"


FULL = {
    "resnet18": (11, torchvision.models.resnet18),
    "resnet50": (12, torchvision.models.resnet50),
    "resnext50_32x4d": (13, torchvision.models.resnext50_32x4d),
    "wide_resnet50_2": (14, torchvision.models.wide_resnet50_2),
}


def cmd_full(out, images):
    os.makedirs(out, exist_ok=True)
    tf = pipeline(256, 224, IMAGENET_MEAN, IMAGENET_STD)
    for name, (seed, build) in FULL.items():
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model = randomise_bn(build(weights=None), gen, (3, 224, 224))
        logits = logits_for(model, tf, images)
        base = os.path.join(out, name)
        save_safetensors(base + ".safetensors", state_dict_for_file(model))
        write_expected(base + ".expected.json", name, images, logits)


def cmd_cifar(weights, out, images):
    sd = load_safetensors(weights)
    n = len({k.split(".")[1] for k in sd if k.startswith("layer1.")})
    model = CifarResNet(n)
    model.load_state_dict(sd, strict=False)
    missing = set(model.state_dict()) - set(sd)
    if any(not k.endswith("num_batches_tracked") for k in missing):
        sys.exit("make-fixtures: %s lacks %s" % (weights, sorted(missing)))
    tf = pipeline(0, 32, IMAGENET_MEAN, IMAGENET_STD)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    logits = []
    for i in range(0, len(images), 500):
        logits += logits_for(model, tf, images[i:i + 500])
    write_expected(out, "cifar10-resnet%d" % (6 * n + 2), images, logits)


def image_args(args):
    """The image paths, or the lines of stdin for a lone "-"."""
    if args == ["-"]:
        return [line.rstrip("\n") for line in sys.stdin if line.strip()]
    return args


def main(argv):
    if len(argv) >= 3 and argv[1] == "families":
        cmd_families(argv[2])
    elif len(argv) >= 4 and argv[1] == "full":
        cmd_full(argv[2], image_args(argv[3:]))
    elif len(argv) >= 5 and argv[1] == "cifar":
        cmd_cifar(argv[2], argv[3], image_args(argv[4:]))
    else:
        sys.exit("usage: make-fixtures.py families <out-dir>\n"
                 "       make-fixtures.py full <out-dir> <image>...\n"
                 "       make-fixtures.py cifar <weights> <out.json> "
                 "<image>...")


if __name__ == "__main__":
    main(sys.argv)
