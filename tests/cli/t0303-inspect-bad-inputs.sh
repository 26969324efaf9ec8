#!/bin/sh
# resnet inspect on hostile descriptions, label files and weights: one
# error line in the project's format and exit 1, or, for a missing label
# file, a warning that -q hides and exit 0.

. "${top_srcdir:-.}/tests/lib.sh"

# A small valid description; $1 is spliced in before the closing brace.
desc() {
    printf '%s' '{"name": "t", "input": {"height": 32, "width": 32},
"preprocess": {"crop": 32, "mean": [0, 0, 0], "std": [1, 1, 1]},
"stem": {"conv": {"channels": 8, "kernel": 3}}, "block": {"type": "basic"},
"stages": [{"blocks": 1, "planes": 8}], "head": {"fc": {"classes": 2}}'
    printf '%s}\n' "$1"
}

# expect_error FILE LINE ARGS...: inspect exits 1 with exactly LINE.
expect_error() {
    _file=$1 _line=$2
    shift 2
    expect_exit 1 "$RESNET" inspect -m "$_file" "$@"
    printf '%s\n' "$_line" >"$tmp/want"
    expect_same "$tmp/want" "$tmp/err"
}

desc '' >"$tmp/good.json"
expect_exit 0 "$RESNET" inspect -m "$tmp/good.json"

# Text after the object, a repeated key, a number over the limit.
{ desc ''; echo '{}'; } >"$tmp/trailing.json"
expect_error "$tmp/trailing.json" "resnet: bad description '$tmp/trailing.json': text after the JSON value (at byte $(($(desc '' | wc -c))))"
desc ', "name": "u"' >"$tmp/dup.json"
expect_error "$tmp/dup.json" "resnet: bad description '$tmp/dup.json': name: duplicate key"
desc '' | sed 's/"planes": 8/"planes": 65537/' >"$tmp/big.json"
expect_error "$tmp/big.json" "resnet: bad description '$tmp/big.json': stages[0].planes: expected a positive integer of at most 65536"

# A missing label file is only a warning; -q hides it.
desc ', "labels": "nope.txt"' >"$tmp/nolabels.json"
expect_exit 0 "$RESNET" inspect -m "$tmp/nolabels.json"
echo "resnet: warning: cannot find label file 'nope.txt' for 't': printing class indices" >"$tmp/want"
expect_same "$tmp/want" "$tmp/err"
expect_exit 0 "$RESNET" inspect -q -m "$tmp/nolabels.json"
[ -s "$tmp/err" ] && fail "-q printed: $(cat "$tmp/err")"

# A label file with too few lines, or a FIFO in its place, is an error.
desc ', "labels": "labels.txt"' >"$tmp/labels.json"
echo cat >"$tmp/labels.txt"
expect_error "$tmp/labels.json" "resnet: label file '$tmp/labels.txt' has fewer lines than the 2 classes of 't'"
rm "$tmp/labels.txt"
mkfifo "$tmp/labels.txt"
expect_error "$tmp/labels.json" "resnet: cannot read label file '$tmp/labels.txt': not a regular file"

# A PyTorch file given as weights is named as one.
printf 'PK\003\004\024\000\000\000\000\000\000\000\000\000archive/data.pkl' >"$tmp/w.pth"
expect_error "$tmp/good.json" "resnet: '$tmp/w.pth' is a PyTorch file, not safetensors (convert it with resnet convert)" -w "$tmp/w.pth"

finish
