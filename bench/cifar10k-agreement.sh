#!/bin/sh
# How often `resnet classify` agrees with PyTorch on the 10,000 CIFAR-10
# test JPEGs with cifar10-resnet20 (akamaster's weights), with both top-1
# accuracies, the largest logit difference and wall times. A measurement,
# not a test; run it from the build tree:
#     sh <srcdir>/bench/cifar10k-agreement.sh
# Environment: RESNET (default ./resnet), RESNET_SHARED_DATA, PYTHON_TORCH,
# JOBS (classify's -j, default: its own), DEPTH (20, 32, 44 or 56: which
# cifar10-resnet<depth>; default 20).

set -u

abs() {
    (cd "$(dirname "$1")" && printf '%s/%s\n' "$(pwd)" "$(basename "$1")")
}

now() {
    date +%s.%N
}

top_srcdir=$(cd "$(dirname "$0")/.." && pwd)
: "${RESNET:=./resnet}"
: "${PYTHON_TORCH:=/usr/bin/python3}"
: "${DEPTH:=20}"
: "${RESNET_SHARED_DATA:=$top_srcdir/../shared/data}"
RESNET=$(abs "$RESNET")
data=$(abs "$RESNET_SHARED_DATA/images/cifar10/jpg-test10k")
weights=$(abs \
    "$RESNET_SHARED_DATA/weights/cifar10/akamaster-resnet$DEPTH.safetensors")
classes="$RESNET_SHARED_DATA/labels/cifar10_classes.txt"
for f in "$RESNET" "$weights" "$classes"; do
    [ -f "$f" ] || { echo "cifar10k-agreement: '$f' not found" >&2; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/resnet-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Paths relative to the data folder (<class>/NNNN.jpg) keep the one
# command line short.
cd "$data" || exit 1
find . -name '*.jpg' | sed 's|^\./||' | sort >"$tmp/list"
n=$(wc -l <"$tmp/list")

# Ours: every image in one call.
t0=$(now)
"$RESNET" classify --format json --logits -k 1 ${JOBS:+-j "$JOBS"} \
    -m "$top_srcdir/models/cifar10-resnet$DEPTH.json" -w "$weights" -T "$tmp/list" \
    >"$tmp/ours.jsonl"
rc=$?
t1=$(now)
[ "$rc" -eq 0 ] || echo "cifar10k-agreement: classify exited $rc" >&2

# PyTorch's, through torchvision's pipeline.
"$PYTHON_TORCH" "$top_srcdir/tests/make-fixtures.py" cifar "$weights" \
    "$tmp/torch.json" - <"$tmp/list" || exit 1
t2=$(now)

"$PYTHON_TORCH" - "$tmp/ours.jsonl" "$tmp/torch.json" "$classes" \
    "$n" "$t0" "$t1" "$t2" <<'PY'
import json, sys
ours_path, torch_path, classes_path, n, t0, t1, t2 = sys.argv[1:]
classes = open(classes_path).read().split()
theirs = json.load(open(torch_path))["images"]
ours = [json.loads(line) for line in open(ours_path)]
if len(ours) != len(theirs):
    sys.exit("cifar10k-agreement: %d results from classify, %d expected"
             % (len(ours), len(theirs)))
agree = ok_ours = ok_torch = 0
worst = (0.0, "")
for a, b in zip(ours, theirs):
    assert a["file"] == b["file"], (a["file"], b["file"])
    truth = classes.index(b["file"].split("/")[0])
    top_a = a["top"][0]["index"]
    top_b = max(range(len(b["logits"])), key=lambda j: b["logits"][j])
    agree += top_a == top_b
    ok_ours += top_a == truth
    ok_torch += top_b == truth
    scale = max(abs(v) for v in b["logits"])
    diff = max(abs(x - y) for x, y in zip(a["logits"], b["logits"]))
    worst = max(worst, (diff / scale, b["file"]))
m = len(ours)
print("images               %d" % m)
print("top-1 agreement      %.2f %% (%d/%d)" % (100.0 * agree / m, agree, m))
print("largest logit diff   %.3g x max|logit| (%s)" % worst)
print("accuracy, resnet     %.2f %%" % (100.0 * ok_ours / m))
print("accuracy, PyTorch    %.2f %%" % (100.0 * ok_torch / m))
print("wall time, resnet    %.2f s" % (float(t1) - float(t0)))
print("wall time, PyTorch   %.2f s (with start-up and decoding)"
      % (float(t2) - float(t1)))
PY
