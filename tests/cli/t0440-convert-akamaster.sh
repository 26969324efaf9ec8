#!/bin/sh
# The real akamaster CIFAR-10 checkpoints (legacy format, module. prefix,
# state_dict in a checkpoint, saved on cuda:0) convert without --arch to
# the CIFAR ResNet of their depth, with the tensors PyTorch exported to
# the safetensors beside them, and classify the png200 images exactly as
# the shipped model does.

. "$top_srcdir/tests/lib.sh"

need_shared_data
dir=$RESNET_SHARED_DATA/weights/cifar10
images=$RESNET_SHARED_DATA/images/cifar10/png200
[ -d "$dir" ] && [ -d "$images" ] || skip "no CIFAR-10 weights or images in '$RESNET_SHARED_DATA'"
[ -x /usr/bin/python3 ] || skip "/usr/bin/python3 is needed to compare tensors"
RESNET_MODEL_PATH=$top_srcdir/models
export RESNET_MODEL_PATH
cd "$tmp" || exit 1
find "$images" -name '*.png' | sort >images.txt
[ "$(wc -l <images.txt)" -eq 200 ] || fail "expected 200 images in '$images'"

for depth in 20 32 44 56; do
    th=$(ls "$dir"/akamaster-resnet$depth-*.th 2>/dev/null)
    [ -f "$th" ] || { fail "no akamaster-resnet$depth-*.th"; continue; }
    base=$(basename "$th" .th)
    expect_exit 0 "$RESNET" -q convert "$th"
    printf 'cifar10-resnet%s\t%s\t%s\n' "$depth" "$base.safetensors" \
        "$base.json" >want
    expect_same want "$tmp/out"
    /usr/bin/python3 "$top_srcdir/tests/st-compare.py" "$base.safetensors" \
        "$dir/akamaster-resnet$depth.safetensors" >&2 ||
        fail "resnet$depth: tensors differ from PyTorch's export"

    expect_exit 0 "$RESNET" classify -m "$base.json" --logits -T images.txt
    mv "$tmp/out" got
    expect_exit 0 "$RESNET" classify -m cifar10-resnet$depth \
        -w "$dir/akamaster-resnet$depth.safetensors" --logits -T images.txt
    expect_same "$tmp/out" got
done
finish
