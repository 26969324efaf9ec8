#!/bin/sh
# The images of shared/cases/images decode to the size and RGB bytes that
# EXPECTED.tsv gives, or fail with one line naming the file; the reference
# crops match Resize(256) + CenterCrop(224) byte for byte.

. "$top_srcdir/tests/lib.sh"

need_shared_cases
cases=$RESNET_SHARED_CASES/images
dump=$top_builddir/tests/tools/image-dump
[ -f "$cases/EXPECTED.tsv" ] || skip "no EXPECTED.tsv in '$cases'"

# Every row: the decoded size and sha256, or an error naming the file.
n_rows=0
tab=$(printf '\t')
while IFS=$tab read -r file expect width height sha crop; do
    [ "$file" = file ] && continue
    n_rows=$((n_rows + 1))
    if [ "$expect" = error ]; then
        expect_exit 1 "$dump" "$cases/$file"
        if [ "$(wc -l <"$tmp/err")" -ne 1 ] ||
            ! grep -qF "'$cases/$file'" "$tmp/err"; then
            fail "$file: expected one error line naming the file, got: $(cat "$tmp/err")"
        fi
        continue
    fi
    expect_exit 0 "$dump" --info "$cases/$file"
    if [ "$(cat "$tmp/out")" != "$width $height" ]; then
        fail "$file: expected size $width $height, got $(cat "$tmp/out")"
    fi
    got=$("$dump" "$cases/$file" | sha256sum | cut -d' ' -f1)
    if [ "$got" != "$sha" ]; then
        fail "$file: expected RGB sha256 $sha, got $got"
    fi
done <"$cases/EXPECTED.tsv"
[ "$n_rows" -gt 0 ] || fail "EXPECTED.tsv has no rows"

# The truncated JPEG and the huge header say why.
expect_exit 1 "$dump" "$cases/truncated_60pct.jpg"
grep -q "truncated JPEG data" "$tmp/err" || fail "truncation not named: $(cat "$tmp/err")"
start=$(date +%s%N)
expect_exit 1 "$dump" "$cases/huge_dims_65500.jpg"
ms=$((($(date +%s%N) - start) / 1000000))
grep -q "too large (65500x65500 pixels" "$tmp/err" ||
    fail "huge image not refused as too large: $(cat "$tmp/err")"
[ "$ms" -lt 1000 ] || fail "huge_dims_65500.jpg took $ms ms to refuse"

# A file far longer than any image within the budget is not read in.
printf '\211PNG\r\n\032\n' >"$tmp/long.png"
truncate -s 70M "$tmp/long.png"
expect_exit 1 "$dump" --max-pixels 1000 "$tmp/long.png"
grep -q "cannot decode '.*long.png': file too large (over 67116864 bytes)" "$tmp/err" ||
    fail "long file: $(cat "$tmp/err")"
rm -f "$tmp/long.png"

# A missing file is an I/O error with the system's reason.
expect_exit 1 "$dump" "$cases/does_not_exist.jpg"
grep -q "cannot open '.*does_not_exist.jpg': No such file or directory" "$tmp/err" ||
    fail "missing file: $(cat "$tmp/err")"

# A folder cannot be read; the reason comes from the system.
expect_exit 1 "$dump" "$cases"
grep -q "cannot read '.*': Is a directory" "$tmp/err" || fail "folder: $(cat "$tmp/err")"

# Cut short inside its data, a PNG or JPEG fails cleanly with one line.
for src in base_rgb.png baseline.jpg progressive.jpg; do
    size=$(wc -c <"$cases/$src")
    for percent in 1 5 20 50 90; do
        head -c $((size * percent / 100)) "$cases/$src" >"$tmp/cut"
        expect_exit 1 "$dump" "$tmp/cut"
        [ "$(wc -l <"$tmp/err")" -eq 1 ] ||
            fail "$src cut to $percent%: expected one error line, got: $(cat "$tmp/err")"
    done
done

# Each reference crop equals ours; its source shares the name's stem.
n_crops=0
for ref in "$cases"/expected/*.crop224.png; do
    [ -f "$ref" ] || continue
    stem=$(basename "$ref" .crop224.png)
    src=$(ls "$cases/$stem".* | head -n 1)
    "$dump" "$ref" >"$tmp/want.rgb" || fail "cannot decode $ref"
    expect_exit 0 "$dump" --resize 256 --crop 224 224 "$src"
    expect_same "$tmp/want.rgb" "$tmp/out"
    n_crops=$((n_crops + 1))
done
[ "$n_crops" -gt 0 ] || fail "no reference crops in $cases/expected"

# Solid red, normalised with ImageNet's mean and std, before and after
# the crop: every value of each channel prints as the same 6 digits.
for args in "" "--resize 256 --crop 224 224"; do
    # shellcheck disable=SC2086
    "$dump" $args --normalized --mean 0.485 0.456 0.406 \
        --std 0.229 0.224 0.225 "$cases/red_64.png" >"$tmp/red.f32" ||
        fail "cannot normalise red_64.png"
    od -A n -v -t f4 "$tmp/red.f32" | tr -s ' ' '\n' | grep . |
        awk '{ printf "%.5f\n", $1 }' | uniq -c | awk '{ print $2, $1 }' >"$tmp/red.txt"
    if [ -z "$args" ]; then n=4096; else n=50176; fi
    printf '2.24891 %d\n-2.03571 %d\n-1.80444 %d\n' "$n" "$n" "$n" >"$tmp/red.want"
    expect_same "$tmp/red.want" "$tmp/red.txt"
done

# Extraneous bytes before the scan: libjpeg skips them with a warning and
# PIL decodes the same pixels, so we do too.
"$PYTHON_TORCH" -c '
import sys
b = open(sys.argv[1], "rb").read()
i = b.index(b"\xff\xda")
open(sys.argv[2], "wb").write(b[:i] + b"\x00\x01\x02" + b[i:])
' "$cases/baseline.jpg" "$tmp/extraneous.jpg" || fail "cannot write extraneous.jpg"
"$dump" "$tmp/extraneous.jpg" >"$tmp/extraneous.rgb" ||
    fail "extraneous bytes before the scan refused"
"$dump" "$cases/baseline.jpg" >"$tmp/baseline.rgb"
expect_same "$tmp/baseline.rgb" "$tmp/extraneous.rgb"

finish
