#!/usr/bin/python3
"""Writes models/imagenet-classes.txt: the 1000 ImageNet class names in
torchvision's order, one a line, from the weights metadata of Debian's
python3-torchvision. Run: /usr/bin/python3 scripts/imagenet-labels.py"""

import os
import sys

from torchvision.models._meta import _IMAGENET_CATEGORIES

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                   "models", "imagenet-classes.txt")
if len(_IMAGENET_CATEGORIES) != 1000:
    sys.exit("expected 1000 ImageNet classes, got %d" % len(_IMAGENET_CATEGORIES))
with open(out, "w") as f:
    for name in _IMAGENET_CATEGORIES:
        f.write(name + "\n")
