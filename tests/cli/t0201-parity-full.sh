#!/bin/sh
# The issue's "done when": torchvision's resnet18, resnet50,
# resnext50_32x4d and wide_resnet50_2 (torchvision's init plus randomised
# BN statistics) with the shipped descriptions give PyTorch's logits on
# real photos, through the full decode-resize-crop-normalise pipeline.

. "${top_srcdir:-.}/tests/lib.sh"

need_torch
need_shared_data

fix="$top_builddir/tests/fixtures/full"
script="$top_srcdir/tests/make-fixtures.py"
compare="$top_srcdir/tests/compare-logits.py"
photos="$RESNET_SHARED_DATA/images/photos"
models="resnet18 resnet50 resnext50_32x4d wide_resnet50_2"
samples="$RESNET_SHARED_DATA/images/imagenet/samples"
# Every photo, JPEG and PNG (11 at the time of writing, up to 1352x900),
# and two ImageNet samples: 106x150 (the resize enlarges it) and a
# greyscale JPEG.
set -- "$photos"/*.jpg "$photos"/*.png "$samples"/680_*.JPEG \
    "$samples"/710_*.JPEG
for f in "$@"; do
    [ -f "$f" ] || skip "image '$f' not found"
done

# The models (about 550 MB) are cached in the build tree; the stamp
# records the images so that another data folder regenerates them.
if ! [ -f "$fix/stamp" ] || [ -n "$(find "$script" -newer "$fix/stamp")" ] ||
    [ "$(cat "$fix/stamp")" != "$*" ]; then
    rm -rf "$fix"
    if ! "$PYTHON_TORCH" "$script" full "$fix" "$@"; then
        fail "make-fixtures.py full failed"
        finish
    fi
    echo "$*" >"$fix/stamp"
fi

labels="$top_srcdir/models/imagenet-classes.txt"
for m in $models; do
    out="$tmp/$m.out"
    "$RESNET" classify --format json --logits -k 5 -j 2 \
        -m "$top_srcdir/models/$m.json" -w "$fix/$m.safetensors" "$@" \
        >"$out" 2>"$tmp/$m.err"
    rc=$?
    if [ "$rc" -ne 0 ]; then
        fail "classify with $m exited $rc: $(head -c 400 "$tmp/$m.err")"
        continue
    fi
    "$PYTHON_TORCH" "$compare" --name "$m" --top 5 --labels "$labels" \
        "$fix/$m.expected.json" "$out" ||
        fail "$m does not match PyTorch"
done

finish
