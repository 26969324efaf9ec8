#!/bin/sh
# Real weights: akamaster's CIFAR-10 ResNet-20 with the shipped
# description classifies the 200 lossless CIFAR-10 PNGs exactly as PyTorch
# does (same top-1 everywhere, logits within 1e-4 x max|logit|) and scores
# the 90.0 % measured with PyTorch on them.

. "${top_srcdir:-.}/tests/lib.sh"

need_torch
need_shared_data

fix="$top_builddir/tests/fixtures/cifar-real"
script="$top_srcdir/tests/make-fixtures.py"
compare="$top_srcdir/tests/compare-logits.py"
weights="$RESNET_SHARED_DATA/weights/cifar10/akamaster-resnet20.safetensors"
png="$RESNET_SHARED_DATA/images/cifar10/png200"
expected="$fix/resnet20-png200.expected.json"
[ -f "$weights" ] || skip "weights '$weights' not found"
[ -f "$png/labels.csv" ] || skip "'$png/labels.csv' not found"

# The images in labels.csv's order.
sed 1d "$png/labels.csv" | cut -d, -f1 | sed "s|^|$png/|" >"$tmp/list"
[ "$(wc -l <"$tmp/list")" -eq 200 ] || fail "expected 200 images in labels.csv"

# PyTorch's logits, cached until the script or the data folder changes.
if ! [ -f "$fix/stamp" ] || [ -n "$(find "$script" -newer "$fix/stamp")" ] ||
    [ "$(cat "$fix/stamp")" != "$weights" ]; then
    rm -rf "$fix"
    mkdir -p "$fix"
    if ! "$PYTHON_TORCH" "$script" cifar "$weights" "$expected" - <"$tmp/list"
    then
        fail "make-fixtures.py cifar failed"
        finish
    fi
    echo "$weights" >"$fix/stamp"
fi

# All 200 images in one call.
# One path a line: split on newlines only, expand no wildcards.
old_ifs=$IFS
IFS='
'
set -f
# shellcheck disable=SC2046
set -- $(cat "$tmp/list")
set +f
IFS=$old_ifs
"$RESNET" classify --format json --logits -k 3 \
    -m "$top_srcdir/models/cifar10-resnet20.json" -w "$weights" "$@" \
    >"$tmp/out" 2>"$tmp/err"
rc=$?
if [ "$rc" -ne 0 ]; then
    fail "classify exited $rc: $(head -c 400 "$tmp/err")"
    finish
fi
"$PYTHON_TORCH" "$compare" --name cifar10-resnet20 --top 3 --top1-exact \
    --labels "$top_srcdir/models/cifar10-classes.txt" \
    --truth "$png/labels.csv" --accuracy 90.0 "$expected" "$tmp/out" \
    >"$tmp/report" || fail "cifar10-resnet20 does not match PyTorch"
tail -n 2 "$tmp/report"

finish
