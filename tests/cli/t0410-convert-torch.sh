#!/bin/sh
# Files saved by PyTorch (tests/make-torch-files.py): every torchvision
# family and a CIFAR ResNet, zip and legacy formats, module. prefixes,
# checkpoints, parameters, protocol 4, f16/bf16/f64, views. Each converts
# to the bit-identical tensors PyTorch holds, is recognised as the right
# model, and classifies with PyTorch's logits (|d| <= 1e-4 * max(1, |l|)).
# RESNET_TEST_LARGE=1 adds resnet50, resnext50_32x4d and wide_resnet50_2.

. "$top_srcdir/tests/lib.sh"

need_torch
work=$top_builddir/tests/work/convert-torch
rm -rf "$work"
mkdir -p "$work/out" || exit 1
large=
[ "${RESNET_TEST_LARGE:-0}" = 1 ] && large=--large
"$PYTHON_TORCH" "$top_srcdir/tests/make-torch-files.py" "$work" \
    "$tmp/marker" $large || fail "make-torch-files.py failed"
RESNET_MODEL_PATH=$top_srcdir/models
export RESNET_MODEL_PATH

tab=$(printf '\t')
n=0
while IFS=$tab read -r name input model args; do
    n=$((n + 1))
    out=$work/out/$name
    # shellcheck disable=SC2086 # args is a list of options
    expect_exit 0 "$RESNET" -q convert -o "$out.safetensors" $args \
        "$work/$input"
    printf '%s\t%s\t%s\n' "$model" "$out.safetensors" "$out.json" >"$tmp/want"
    expect_same "$tmp/want" "$tmp/out"
    "$PYTHON_TORCH" "$top_srcdir/tests/st-compare.py" "$out.safetensors" \
        "$work/$name.ref.st" >&2 || fail "$name: tensors differ from PyTorch's"
    grep -q "\"weights\":[[:space:]]*\"$name.safetensors\"" "$out.json" ||
        fail "$name: description does not name $name.safetensors"

    # The converted model gives PyTorch's logits.
    case $model in
    cifar*) img=img32.png ;;
    *) img=img224.png ;;
    esac
    expect_exit 0 "$RESNET" classify -m "$out.json" --format json --logits \
        -k 1 "$work/$img"
    "$PYTHON_TORCH" - "$tmp/out" "$work/$name.logits" <<'PY' >&2 ||
import json, sys
got = json.loads(open(sys.argv[1]).readline())["logits"]
want = [float(x) for x in open(sys.argv[2])]
assert len(got) == len(want), "%d logits, expected %d" % (len(got), len(want))
worst = max(range(len(want)), key=lambda i: abs(got[i] - want[i]))
d = abs(got[worst] - want[worst])
if d > 1e-4 * max(1.0, abs(want[worst])):
    sys.exit("logit %d: expected %r, got %r (difference %g)"
             % (worst, want[worst], got[worst], d))
PY
        fail "$name: logits differ from PyTorch's"
    rm -f "$out.safetensors"
done <"$work/cases.tsv"
[ "$n" -ge 20 ] || fail "only $n cases were made"

# --arch checks the tensors against a description instead.
cifar=$work/cifar-zip.pth
expect_exit 0 "$RESNET" convert --arch cifar10-resnet20 -o "$work/out/a.st" \
    "$cifar"
expect_exit 1 "$RESNET" convert --arch resnet18 -o "$work/out/b.st" "$cifar"
echo "resnet: bad shape for 'conv1.weight' in '$cifar' (expected 64x3x7x7, got 16x3x3x3)" \
    >"$tmp/want"
expect_same "$tmp/want" "$tmp/err"
[ ! -e "$work/out/b.st" ] || fail "--arch mismatch left a weights file"
[ ! -e "$tmp/marker" ] || fail "something ran"

[ "$n_fail" -eq 0 ] && [ -z "${RESNET_KEEP:-}" ] && rm -rf "$work"
finish
