#!/bin/sh
# Real weights: akamaster's CIFAR-10 ResNet-20 (and -32, -44, -56) with
# the shipped descriptions classify the 200 lossless CIFAR-10 PNGs exactly
# as PyTorch does (the same top-1 on every image, logits within
# 1e-4 x max|logit|) and score what PyTorch scores on them: 90.0 % for
# ResNet-20 (94.0, 88.5 and 91.0 % for the others).

. "${top_srcdir:-.}/tests/lib.sh"

need_torch
need_shared_data

fix="$top_builddir/tests/fixtures/cifar-real"
script="$top_srcdir/tests/make-fixtures.py"
compare="$top_srcdir/tests/compare-logits.py"
wdir="$RESNET_SHARED_DATA/weights/cifar10"
png="$RESNET_SHARED_DATA/images/cifar10/png200"
# depth:accuracy, as measured with PyTorch (shared/data/README.md).
models="20:90.0 32:94.0 44:88.5 56:91.0"
for m in $models; do
    w="$wdir/akamaster-resnet${m%%:*}.safetensors"
    [ -f "$w" ] || skip "weights '$w' not found"
done
[ -f "$png/labels.csv" ] || skip "'$png/labels.csv' not found"

# The images in labels.csv's order.
sed 1d "$png/labels.csv" | cut -d, -f1 | sed "s|^|$png/|" >"$tmp/list"
[ "$(wc -l <"$tmp/list")" -eq 200 ] || fail "expected 200 images in labels.csv"

# PyTorch's logits, cached until the script or the data folder changes.
if ! [ -f "$fix/stamp" ] || [ -n "$(find "$script" -newer "$fix/stamp")" ] ||
    [ "$(cat "$fix/stamp")" != "$wdir" ]; then
    rm -rf "$fix"
    mkdir -p "$fix"
    for m in $models; do
        depth=${m%%:*}
        if ! "$PYTHON_TORCH" "$script" cifar \
            "$wdir/akamaster-resnet$depth.safetensors" \
            "$fix/resnet$depth-png200.expected.json" - <"$tmp/list"
        then
            fail "make-fixtures.py cifar failed for ResNet-$depth"
            finish
        fi
    done
    echo "$wdir" >"$fix/stamp"
fi

# All 200 images in one call, listed one a line.

for m in $models; do
    depth=${m%%:*}
    name=cifar10-resnet$depth
    "$RESNET" classify --format json --logits -k 3 \
        -m "$top_srcdir/models/$name.json" \
        -w "$wdir/akamaster-resnet$depth.safetensors" -T "$tmp/list" \
        >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ "$rc" -ne 0 ]; then
        fail "classify with $name exited $rc: $(head -c 400 "$tmp/err")"
        continue
    fi
    "$PYTHON_TORCH" "$compare" --name "$name" --top 3 --top1-exact \
        --labels "$top_srcdir/models/cifar10-classes.txt" \
        --truth "$png/labels.csv" --accuracy "${m#*:}" \
        "$fix/resnet$depth-png200.expected.json" "$tmp/out" \
        >"$tmp/report" || fail "$name does not match PyTorch"
    tail -n 2 "$tmp/report"
done

finish
