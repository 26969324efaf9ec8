#!/usr/bin/python3
"""Reference figures for `resnet inspect`, from PyTorch.

usage: inspect-reference.py [--input <h>x<w>] <model.json>...

For each description, builds the same network in PyTorch by its name,
not from the description: torchvision's model of that name, for
cifar10-resnet<N> akamaster's (torchref.py), for seed-resnet the module
written below. Prints one line per model: name, parameter count
(PyTorch's: BatchNorm counts weight and bias) and multiply-accumulates
of the convolutions and the linear layer for one image, counted by
forward hooks on a pass at the description's input size (or --input),
tab-separated.

Run with Debian's /usr/bin/python3 (python3-torch, python3-torchvision).
"""
import json
import os
import sys

import torch
import torch.nn as nn
import torchvision
from torchvision.models.resnet import BasicBlock, ResNet

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torchref import CifarResNet  # noqa: E402 (beside this script)


class SeedResNet(ResNet):
    """The seed network: torchvision's stem and basic blocks, three stages
    of two blocks at 64, 128 and 256 channels, ten classes."""

    def __init__(self):
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=10)
        del self.layer4
        self.fc = nn.Linear(256, 10)

    def _forward_impl(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build(name):
    if name.startswith("cifar10-resnet"):
        return CifarResNet.of_depth(int(name[len("cifar10-resnet"):]))
    if name == "seed-resnet":
        return SeedResNet()
    return getattr(torchvision.models, name)(weights=None)


def count_macs(model, c, h, w):
    """Multiply-accumulates of the convs and linear layers, by hooks."""
    total = [0]

    def conv_hook(m, inputs, out):
        k = m.kernel_size[0] * m.kernel_size[1]
        total[0] += out[0].numel() * (m.in_channels // m.groups) * k

    def linear_hook(m, inputs, out):
        total[0] += m.in_features * m.out_features

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(conv_hook)
        elif isinstance(m, nn.Linear):
            m.register_forward_hook(linear_hook)
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, c, h, w))
    return total[0]


def main(argv):
    size = None
    if len(argv) > 1 and argv[0] == "--input":
        size = [int(v) for v in argv[1].split("x")]
        argv = argv[2:]
    # Weights are not needed: skip the random initialisation's cost.
    for fn in ("kaiming_normal_", "kaiming_uniform_", "normal_", "uniform_",
               "constant_", "zeros_", "ones_"):
        setattr(nn.init, fn, lambda t, *a, **k: t)
    torch.set_num_threads(1)
    for path in argv:
        with open(path) as f:
            desc = json.load(f)
        model = build(desc["name"])
        n_params = sum(p.numel() for p in model.parameters())
        c = desc["input"].get("channels", 3)
        h, w = size or (desc["input"]["height"], desc["input"]["width"])
        print("%s\t%d\t%d" % (desc["name"], n_params,
                              count_macs(model, c, h, w)))


if __name__ == "__main__":
    main(sys.argv[1:])
