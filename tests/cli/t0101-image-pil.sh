#!/bin/sh
# Decoding, resizing and Resize + CenterCrop give the same bytes as PIL and
# torchvision: on generated images of every PNG and JPEG kind, on the real
# photos and on a handful of ImageNet samples.

. "$top_srcdir/tests/lib.sh"

need_shared_data
"$PYTHON_TORCH" -c 'import PIL, numpy, torchvision' 2>/dev/null ||
    skip "PIL, numpy and torchvision are needed (Debian: python3-pil python3-torchvision)"
photos=$RESNET_SHARED_DATA/images/photos
samples=$RESNET_SHARED_DATA/images/imagenet/samples
[ -d "$photos" ] && [ -d "$samples" ] ||
    skip "no photos or ImageNet samples under '$RESNET_SHARED_DATA/images'"
dump=$top_builddir/tests/tools/image-dump
ref=$top_srcdir/tests/pil-reference.py

# Every tenth sample, the greyscale one among them; names have no spaces.
set -- "$photos"/*.jpg "$photos"/*.png
for f in $(ls "$samples"/*.JPEG | awk 'NR % 10 == 1 || /pencil_sharpener/'); do
    set -- "$@" "$f"
done
"$PYTHON_TORCH" "$ref" jobs "$tmp/ref" "$@" || fail "pil-reference.py failed"

# One line per check: image, op, args (- for none), sha256 of PIL's bytes.
tab=$(printf '\t')
n_ok=0
n_bad=0
while IFS=$tab read -r image op args sha; do
    case $op in
    decode) opts= args= ;;
    size) opts="--size $args" ;;
    prepare) set -- $args; opts="--resize $1 --crop $2 $3" ;;
    esac
    # shellcheck disable=SC2086
    got=$("$dump" $opts "$image" | sha256sum | cut -d' ' -f1)
    if [ "$got" = "$sha" ]; then
        n_ok=$((n_ok + 1))
        continue
    fi
    n_bad=$((n_bad + 1))
    # shellcheck disable=SC2086
    "$PYTHON_TORCH" "$ref" bytes "$image" "$op" $args >"$tmp/want"
    # shellcheck disable=SC2086
    "$dump" $opts "$image" >"$tmp/got"
    fail "$(basename "$image") $op $args differs from PIL: $(cmp "$tmp/want" "$tmp/got" 2>&1 | head -n 1), $(cmp -l "$tmp/want" "$tmp/got" 2>/dev/null | wc -l) bytes"
done <"$tmp/ref/jobs.tsv"

n_images=$(cut -f1 "$tmp/ref/jobs.tsv" | sort -u | wc -l)
echo "$n_ok of $((n_ok + n_bad)) checks on $n_images images equal PIL"
[ "$n_ok" -gt 1000 ] || fail "only $n_ok checks ran"
finish
