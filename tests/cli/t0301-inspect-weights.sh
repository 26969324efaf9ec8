#!/bin/sh
# resnet inspect -w names every problem of a weights file on its own line
# (missing, unexpected, misshapen tensors, wrong dtypes, NaN or Inf,
# BatchNorm variances not above zero) and exits 1; a good file exits 0.
# The model loader and convert run the same check and stop at the first
# problem, naming the file.
. "${top_srcdir:-.}/tests/lib.sh"

py=/usr/bin/python3
[ -x "$py" ] || skip "Debian's /usr/bin/python3 is needed to write weights"
writer="$top_srcdir/tests/write-safetensors.py"

# A two-block network with 4 and 8 channels: an identity and a
# projection shortcut.
cat >"$tmp/tiny.json" <<'JSON'
{"name": "tiny", "input": {"channels": 3, "height": 16, "width": 16},
 "preprocess": {"resize": 0, "crop": 16,
                "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
 "stem": {"conv": {"name": "conv1", "channels": 4, "kernel": 3,
                   "stride": 1, "padding": 1},
          "bn": {"name": "bn1"}},
 "block": {"type": "basic", "shortcut": "projection"},
 "stages": [{"name": "layer1", "blocks": 1, "planes": 4, "stride": 1},
            {"name": "layer2", "blocks": 1, "planes": 8, "stride": 2}],
 "head": {"pool": "avg", "fc": {"name": "fc", "classes": 3}}}
JSON

# The tensors torchvision would save for it; $1 is the dtype.
bn() {
    echo "$1.weight=$2:$3 $1.bias=$2:$3 $1.running_mean=$2:$3"
    echo "$1.running_var=$2:$3:var $1.num_batches_tracked=I64:scalar"
}
tensors() {
    echo "conv1.weight=$1:4x3x3x3"; bn bn1 "$1" 4
    echo "layer1.0.conv1.weight=$1:4x4x3x3"; bn layer1.0.bn1 "$1" 4
    echo "layer1.0.conv2.weight=$1:4x4x3x3"; bn layer1.0.bn2 "$1" 4
    echo "layer2.0.conv1.weight=$1:8x4x3x3"; bn layer2.0.bn1 "$1" 8
    echo "layer2.0.conv2.weight=$1:8x8x3x3"; bn layer2.0.bn2 "$1" 8
    echo "layer2.0.downsample.0.weight=$1:8x4x1x1"
    bn layer2.0.downsample.1 "$1" 8
    echo "fc.weight=$1:3x8 fc.bias=$1:3"
}
# write NAME SED-SCRIPT: the F32 tensors edited by SED-SCRIPT.
write() {
    # shellcheck disable=SC2046
    "$py" "$writer" "$tmp/$1.safetensors" \
        $(tensors F32 | tr ' ' '\n' | sed "$2") ||
        fail "cannot write $1.safetensors"
}

# check NAME LINE...: inspect exits 1 with exactly these stderr lines.
check() {
    name=$1
    shift
    expect_exit 1 "$RESNET" inspect -m "$tmp/tiny.json" \
        -w "$tmp/$name.safetensors"
    printf 'resnet: %s\n' "$@" >"$tmp/want"
    expect_same "$tmp/want" "$tmp/err"
}

# Good files, in each float dtype, pass and print their size by dtype.
for dt in F32 F16 BF16; do
    # shellcheck disable=SC2046
    "$py" "$writer" "$tmp/good-$dt.safetensors" $(tensors $dt) ||
        fail "cannot write good-$dt.safetensors"
    expect_exit 0 "$RESNET" inspect -m "$tmp/tiny.json" \
        -w "$tmp/good-$dt.safetensors"
    [ -s "$tmp/err" ] && fail "good $dt file: stderr '$(cat "$tmp/err")'"
    grep -q "^  $dt  *32 tensors, 1463 values, " "$tmp/out" ||
        fail "good $dt file: no '$dt' size line in '$(cat "$tmp/out")'"
done

write missing '/^fc\.bias=/d'
check missing "missing tensor 'fc.bias'"

write extra '$a fc.extra=F32:3\
layer9.bn1.num_batches_tracked=I64:scalar'
check extra "unexpected tensor 'fc.extra'" \
    "unexpected tensor 'layer9.bn1.num_batches_tracked'"

write shape 's/^layer2\.0\.conv2\.weight=F32:8x8x3x3/&x1/;s/^fc\.bias=F32:3/fc.bias=F32:1x3/'
check shape \
    "bad shape for 'layer2.0.conv2.weight' (expected 8x8x3x3, got 8x8x3x3x1)" \
    "bad shape for 'fc.bias' (expected 3, got 1x3)"

write dtype 's/^conv1\.weight=F32/conv1.weight=I32/;s/^fc\.bias=F32/fc.bias=I64/'
check dtype \
    "bad dtype for 'conv1.weight' (expected F32, F16 or BF16, got I32)" \
    "bad dtype for 'fc.bias' (expected F32, F16 or BF16, got I64)"

write nan 's/^layer1\.0\.conv1\.weight=.*/&:inf@7:nan@5:nan@100/;s/^fc\.weight=.*/&:inf@23/'
check nan \
    "bad values for 'layer1.0.conv1.weight' (2 NaN and 1 Inf of 144, first at index 5)" \
    "bad values for 'fc.weight' (0 NaN and 1 Inf of 24, first at index 23)"

# NaN and Inf are found in the half-precision formats too.
for dt in F16 BF16; do
    # shellcheck disable=SC2046
    "$py" "$writer" "$tmp/nan-$dt.safetensors" \
        $(tensors $dt | tr ' ' '\n' | sed 's/^bn1\.bias=.*/&:nan@3:inf@1/') ||
        fail "cannot write nan-$dt.safetensors"
    check "nan-$dt" \
        "bad values for 'bn1.bias' (1 NaN and 1 Inf of 4, first at index 1)"
done

write variance 's/^bn1\.running_var=.*/&:neg@2/;s/^layer2\.0\.bn2\.running_var=.*/&:neg@6:neg@7/'
check variance \
    "bad variance for 'bn1.running_var' (1 of 4 not above zero, first -0.5 at index 2)" \
    "bad variance for 'layer2.0.bn2.running_var' (2 of 8 not above zero, first -0.5 at index 6)"

# Several problems at once: layer order, then file order for the rest.
write all '$a extra=F32:1
/^fc\.bias=/d;s/^conv1\.weight=F32/conv1.weight=I32/;s/^bn1\.running_var=.*/&:neg@0/'
check all \
    "bad dtype for 'conv1.weight' (expected F32, F16 or BF16, got I32)" \
    "bad variance for 'bn1.running_var' (1 of 4 not above zero, first -0.5 at index 0)" \
    "missing tensor 'fc.bias'" \
    "unexpected tensor 'extra'"

# JSON output lists the problems too, and still parses.
expect_exit 1 "$RESNET" inspect -m "$tmp/tiny.json" \
    -w "$tmp/all.safetensors" --format json
"$py" -c '
import json, sys
d = json.load(open(sys.argv[1]))
kinds = [p["kind"] for p in d["weights"]["problems"]]
assert kinds == ["dtype", "variance", "missing", "unexpected"], kinds
' "$tmp/out" || fail "JSON problems of all.safetensors are wrong"

# A file that cannot be read is one error line.
expect_exit 1 "$RESNET" inspect -m "$tmp/tiny.json" -w "$tmp/none.safetensors"
printf "resnet: cannot open '%s': No such file or directory\n" \
    "$tmp/none.safetensors" >"$tmp/want"
expect_same "$tmp/want" "$tmp/err"

# Loading a model runs the same check: the first problem, naming the file.
expect_exit 1 "$RESNET" classify -m "$tmp/tiny.json" \
    -w "$tmp/variance.safetensors" "$tmp/no-image.png"
printf "resnet: bad variance for 'bn1.running_var' in '%s' (1 of 4 not above zero, first -0.5 at index 2)\n" \
    "$tmp/variance.safetensors" >"$tmp/want"
expect_same "$tmp/want" "$tmp/err"

# convert checks the same way, after recognising the network or against
# --arch, and then writes nothing. (num_batches_tracked is left out, so
# the stray one in extra.safetensors is no problem here.)
mkdir "$tmp/conv" || exit 1
# converts NAME ARGS...: convert exits 1 with one line for NAME's file.
converts() {
    name=$1
    shift
    expect_exit 1 "$RESNET" convert "$@" -o "$tmp/conv/$name.safetensors" \
        "$tmp/$name.safetensors"
    printf "resnet: %s\n" "$(printf "$line" "$tmp/$name.safetensors")" \
        >"$tmp/want"
    expect_same "$tmp/want" "$tmp/err"
    [ -z "$(ls -A "$tmp/conv")" ] ||
        fail "convert of $name left $(ls -A "$tmp/conv")"
}
line="bad variance for 'bn1.running_var' in '%s' (1 of 4 not above zero, first -0.5 at index 2)"
converts variance
converts variance --arch "$tmp/tiny.json"
line="bad values for 'layer1.0.conv1.weight' in '%s' (2 NaN and 1 Inf of 144, first at index 5)"
converts nan --dtype f16
line="missing tensor 'fc.bias' in '%s'"
converts missing --arch "$tmp/tiny.json"
line="unexpected tensor 'fc.extra' in '%s'"
converts extra --arch "$tmp/tiny.json"
expect_exit 0 "$RESNET" convert --arch "$tmp/tiny.json" \
    -o "$tmp/conv/good.safetensors" "$tmp/good-BF16.safetensors"
printf 'tiny\t%s\t%s\n' "$tmp/conv/good.safetensors" "$tmp/conv/good.json" \
    >"$tmp/want"
expect_same "$tmp/want" "$tmp/out"

finish
