#!/bin/sh
# resnet inspect's parameter and MAC counts for every shipped model agree
# exactly with the same network built in PyTorch (tests/inspect-reference.py),
# and the headline figures are the published ones.
. "${top_srcdir:-.}/tests/lib.sh"

need_torch

# "name<TAB>params<TAB>macs" from resnet inspect --format json.
figures() {
    "$RESNET" inspect --format json "$@" >"$tmp/json" ||
        { fail "resnet inspect $* exited $?"; return; }
    "$PYTHON_TORCH" -c '
import json, sys
d = json.load(open(sys.argv[1]))
print("%s\t%d\t%d" % (d["model"], d["params"], d["macs"]))' "$tmp/json"
}

# Every model at 64x64 (cheap for PyTorch's forward pass), then the
# CIFAR-10 ones at their own 32x32.
set -- "$top_srcdir"/models/*.json
[ $# -ge 15 ] || fail "expected the 15 shipped models, found $#"
"$PYTHON_TORCH" "$top_srcdir/tests/inspect-reference.py" --input 64x64 "$@" \
    >"$tmp/want64" || fail "inspect-reference.py failed"
"$PYTHON_TORCH" "$top_srcdir/tests/inspect-reference.py" \
    "$top_srcdir"/models/cifar10-*.json >"$tmp/want32" ||
    fail "inspect-reference.py failed on the CIFAR-10 models"
for m in "$@"; do
    figures -m "$m" --input 64x64
done >"$tmp/got64"
for m in "$top_srcdir"/models/cifar10-*.json; do
    figures -m "$m"
done >"$tmp/got32"
expect_same "$tmp/want64" "$tmp/got64"
expect_same "$tmp/want32" "$tmp/got32"

# The published figures, as the text summary prints them.
published() {
    "$RESNET" inspect -m "$top_srcdir/models/$1.json" >"$tmp/text" ||
        fail "resnet inspect -m $1 exited $?"
    grep -qx "parameters:   $2" "$tmp/text" ||
        fail "$1: want parameters '$2', got '$(grep '^parameters' "$tmp/text")'"
    if [ -n "${3:-}" ]; then
        grep -q "^macs: .* ($3)\$" "$tmp/text" ||
            fail "$1: want MACs $3, got '$(grep '^macs' "$tmp/text")'"
    fi
}
published resnet18 "11689512 (11.69 M)" "1.81 G"
published resnet50 "25557032 (25.56 M)" "4.09 G"
published resnet101 "44549160 (44.55 M)"
published resnext50_32x4d "25028904 (25.03 M)"
published wide_resnet50_2 "68883240 (68.88 M)"
published cifar10-resnet20 "269722 (0.27 M)" "40.55 M"

finish
