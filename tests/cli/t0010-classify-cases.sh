#!/bin/sh
# classify on the shared image cases: a result for every good file, one
# error line naming each bad one, input order kept, exit 1 at the end,
# and never a crash or a hang.
. "${top_srcdir:-.}/tests/lib.sh"
need_shared_data
need_shared_cases

cases=$RESNET_SHARED_CASES/images
model="-m $top_srcdir/models/cifar10-resnet20.json -w $RESNET_SHARED_DATA/weights/cifar10/akamaster-resnet20.safetensors"

# Every case on its own: no signal, no hang; errors name the file.
for f in "$cases"/*.jpg "$cases"/*.png; do
    want=$(awk -F'\t' -v f="$(basename "$f")" '$1 == f {print $2}' "$cases/EXPECTED.tsv")
    # shellcheck disable=SC2086
    timeout 60 "$RESNET" classify $model -k 1 "$f" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ "$want" = error ]; then
        [ "$rc" -eq 1 ] || fail "$(basename "$f"): exit $rc, expected 1"
        [ "$(wc -l < "$tmp/err")" -eq 1 ] || fail "$(basename "$f"): not one error line: $(cat "$tmp/err")"
        grep -q "^resnet: .*'$f'" "$tmp/err" || fail "$(basename "$f"): the error does not name the file: $(cat "$tmp/err")"
        [ -s "$tmp/out" ] && fail "$(basename "$f"): output despite the error"
    else
        [ "$rc" -eq 0 ] || fail "$(basename "$f"): exit $rc: $(cat "$tmp/err")"
        [ "$(wc -l < "$tmp/out")" -eq 1 ] || fail "$(basename "$f"): expected one result line"
        [ -s "$tmp/err" ] && fail "$(basename "$f"): stderr not empty: $(cat "$tmp/err")"
    fi
done

# The mixed list: results for the good files and errors for the bad ones,
# in input order; exit 1.
(cd "$cases" && timeout 60 "$RESNET" classify $model -k 1 -T list_mixed.txt) >"$tmp/out" 2>"$tmp/err"
rc=$?
[ "$rc" -eq 1 ] || fail "list_mixed: exit $rc, expected 1"
cut -f1 "$tmp/out" > "$tmp/got"
printf 'baseline.jpg\nprogressive.jpg\n' > "$tmp/want"
expect_same "$tmp/want" "$tmp/got"
sed "s/^resnet: [^']*'\([^']*\)'.*/\1/" "$tmp/err" > "$tmp/got"
printf 'truncated_60pct.jpg\nempty.jpg\ndoes_not_exist.jpg\nnot_an_image.jpg\n' > "$tmp/want"
expect_same "$tmp/want" "$tmp/got"
grep -q "does_not_exist.jpg': No such file or directory$" "$tmp/err" ||
    fail "a missing file does not say so: $(cat "$tmp/err")"

# Progressive and baseline JPEGs of the same pixels, in one batch, and a
# path with spaces: the same classes and probabilities.
# shellcheck disable=SC2086
"$RESNET" classify $model --format json --logits "$cases/baseline.jpg" \
    "$cases/progressive.jpg" "$cases/name with spaces.jpg" > "$tmp/out" || fail "batch failed"
sed 's/^{"file":"[^"]*",//' "$tmp/out" | uniq | wc -l > "$tmp/got"
echo 1 > "$tmp/want"
expect_same "$tmp/want" "$tmp/got"

finish
