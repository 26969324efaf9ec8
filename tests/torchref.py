"""akamaster's CIFAR-10 ResNet (pytorch_resnet_cifar10), the network of
He et al. (2015), section 4.2, for the test scripts: 6n + 2 layers, basic
blocks of 16, 32 and 64 channels, option-A (pad) shortcuts, tensor names
as akamaster's checkpoints have them (conv1, bn1, layer<i>.<j>.conv1 ...,
linear). Modules are created in akamaster's order, so a seeded torch
builds the same initial weights.

Run with Debian's /usr/bin/python3 (python3-torch).
"""
import torch.nn as nn
import torch.nn.functional as F


class PadShortcut(nn.Module):
    """Option A: every second pixel, zero channels on both sides (planes
    // 4 each, as akamaster has it: the channels double)."""

    def __init__(self, planes):
        super().__init__()
        self.pad = planes // 4

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad),
                     "constant", 0)


class CifarBlock(nn.Module):
    """akamaster's BasicBlock with the option-A shortcut."""

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = PadShortcut(planes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """n blocks a stage (depth 6n + 2)."""

    def __init__(self, n, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes = 16
        for i, planes in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                blocks.append(CifarBlock(in_planes, planes,
                                         2 if i and not j else 1))
                in_planes = planes
            setattr(self, "layer%d" % (i + 1), nn.Sequential(*blocks))
        self.linear = nn.Linear(64, num_classes)

    @classmethod
    def of_depth(cls, depth, num_classes=10):
        assert depth % 6 == 2, "a CIFAR ResNet has 6n + 2 layers"
        return cls((depth - 2) // 6, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        # akamaster pools with a kernel of the width; the height too keeps
        # it a global average on non-square inputs (the same op on square).
        out = F.avg_pool2d(out, tuple(out.shape[2:]))
        return self.linear(out.flatten(1))
