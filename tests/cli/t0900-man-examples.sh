#!/bin/sh
# Every command in the man page's EXAMPLES section runs and succeeds, in
# a folder laid out as the examples assume, so the docs cannot go stale.
. "${top_srcdir:-.}/tests/lib.sh"
need_shared_data

data=$RESNET_SHARED_DATA
png=$data/images/cifar10/png200

# The folder the examples talk about: a weights/ folder on the model
# search path with the descriptions and trained weights, some images,
# a list file and a legacy PyTorch checkpoint.
mkdir -p "$tmp/weights" "$tmp/photos" "$tmp/bin"
ln -s "$top_srcdir"/models/* "$data"/weights/cifar10/*.safetensors "$tmp/weights/"
cp "$data"/weights/cifar10/akamaster-resnet20-12fca82f.th "$tmp/resnet20.th"
cp "$png/cat/cat_s_000526.png" "$tmp/cat.png"
cp "$png/ship/boat_s_002757.png" "$tmp/ship.png"
ls "$data"/images/cifar10/jpg-test10k/dog/*.jpg | head -n 5 |
    while read -r f; do cp "$f" "$tmp/photos/"; done
printf 'cat.png\nship.png\n' > "$tmp/list.txt"
ln -s "$RESNET" "$tmp/bin/resnet"

# The example lines: between .nf and .fi under .SH EXAMPLES, unescaped.
sed -n '/^\.SH EXAMPLES/,/^\.SH /p' "$top_srcdir/man/resnet.1" |
    sed -n '/^\.nf/,/^\.fi/{/^\.nf/d;/^\.fi/d;p}' |
    sed 's/\\-/-/g; s/\\(dq/"/g; s/\\e/\\/g' > "$tmp/examples"
n=$(wc -l < "$tmp/examples")
[ "$n" -ge 3 ] || fail "found only $n examples in the man page"

cd "$tmp" || exit 99
i=0
while IFS= read -r line; do
    i=$((i + 1))
    PATH="$tmp/bin:$PATH" RESNET_MODEL_PATH="$tmp/weights" \
        sh -c "$line" > "out.$i" 2> "err.$i" < /dev/null
    rc=$?
    [ "$rc" -eq 0 ] || fail "example $i exited $rc: $line
$(cat "err.$i")"
done < "$tmp/examples"
echo "ran $i examples" >&2

finish
