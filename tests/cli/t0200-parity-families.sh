#!/bin/sh
# Each model family gives PyTorch's logits: small random-weight nets built
# by torchvision (or the akamaster CIFAR code) in tests/make-fixtures.py,
# against resnet classify on a generated PNG and JPEG each.

. "${top_srcdir:-.}/tests/lib.sh"

need_torch

fix="$top_builddir/tests/fixtures/families"
script="$top_srcdir/tests/make-fixtures.py"
compare="$top_srcdir/tests/compare-logits.py"
families="basic bottleneck bottleneck-1x1 resnext wide cifar-a seed-resnet"

# The fixtures are cached in the build tree until the script changes.
if ! [ -f "$fix/stamp" ] || [ -n "$(find "$script" -newer "$fix/stamp")" ]; then
    rm -rf "$fix"
    if ! "$PYTHON_TORCH" "$script" families "$fix"; then
        fail "make-fixtures.py families failed"
        finish
    fi
    touch "$fix/stamp"
fi

for fam in $families; do
    out="$tmp/$fam.out"
    "$RESNET" classify --format json --logits -k 5 -m "$fix/$fam.json" \
        -w "$fix/$fam.safetensors" "$fix/$fam.png" "$fix/$fam.jpg" \
        >"$out" 2>"$tmp/$fam.err"
    rc=$?
    if [ "$rc" -ne 0 ]; then
        fail "classify on family $fam exited $rc: $(head -c 400 "$tmp/$fam.err")"
        continue
    fi
    if [ -s "$tmp/$fam.err" ]; then
        fail "classify on family $fam wrote to stderr: $(head -c 400 "$tmp/$fam.err")"
    fi
    "$PYTHON_TORCH" "$compare" --name "$fam" --top 5 \
        --labels "$fix/ten-classes.txt" "$fix/$fam.expected.json" "$out" ||
        fail "family $fam does not match PyTorch"

    # One image alone gives the very bytes it gets in a batch: the sums
    # must not depend on how the work is split between threads.
    "$RESNET" classify --format json --logits -k 5 -j 2 -m "$fix/$fam.json" \
        -w "$fix/$fam.safetensors" "$fix/$fam.jpg" >"$tmp/$fam.alone" ||
        fail "classify on family $fam with one image failed"
    sed -n 2p "$out" >"$tmp/$fam.batch"
    expect_same "$tmp/$fam.batch" "$tmp/$fam.alone"
done

# The shipped seed-resnet description (224 x 224 crops) with the same
# weights.
"$RESNET" classify --format json --logits -k 5 \
    -m "$top_srcdir/models/seed-resnet.json" -w "$fix/seed-resnet.safetensors" \
    "$fix/seed-resnet.png" "$fix/seed-resnet.jpg" >"$tmp/seed-224.out" ||
    fail "classify with models/seed-resnet.json failed"
"$PYTHON_TORCH" "$compare" --name models/seed-resnet.json --top 5 \
    "$fix/seed-resnet-224.expected.json" "$tmp/seed-224.out" ||
    fail "models/seed-resnet.json does not match PyTorch"

# A model found by name along RESNET_MODEL_PATH, with the weights its
# description names, gives the same bytes as the paths given in full.
cd "$fix" || fail "cannot enter '$fix'"
"$RESNET" classify --format json --logits -k 5 -m "$fix/seed-resnet.json" \
    -w "$fix/seed-resnet.safetensors" seed-resnet.png seed-resnet.jpg \
    >"$tmp/by-path.out" || fail "classify -m $fix/seed-resnet.json failed"
RESNET_MODEL_PATH="$tmp/none:$fix" "$RESNET" classify --format json \
    --logits -k 5 -m seed-resnet seed-resnet.png seed-resnet.jpg \
    >"$tmp/by-name.out" 2>"$tmp/by-name.err" ||
    fail "classify -m seed-resnet: $(head -c 400 "$tmp/by-name.err")"
expect_same "$tmp/by-path.out" "$tmp/by-name.out"

finish
