#!/bin/sh
# Every file of shared/cases/weights converts to the tensors its
# MANIFEST.json lists (shape, sum, first value), or fails as the README
# there says: the LFS pointer is named as one. The module. prefix is
# stripped and reported.

. "$top_srcdir/tests/lib.sh"

need_shared_cases
cases=$RESNET_SHARED_CASES/weights
[ -f "$cases/MANIFEST.json" ] || skip "no MANIFEST.json in '$cases'"
[ -x /usr/bin/python3 ] || skip "/usr/bin/python3 is needed to read the results"
cd "$tmp" || exit 1

n=0
for f in "$cases"/*; do
    base=$(basename "$f")
    case $base in
    MANIFEST.json | README*) continue ;;
    esac
    n=$((n + 1))
    out=${base%.*}
    case $base in
    lfs_pointer*)
        expect_exit 1 "$RESNET" convert "$f"
        echo "resnet: '$f' is a Git LFS pointer, not weights (run git lfs pull)" \
            >want
        expect_same want "$tmp/err"
        [ ! -e "$out.safetensors" ] || fail "$base: left $out.safetensors"
        continue
        ;;
    esac
    expect_exit 0 "$RESNET" convert "$f"
    /usr/bin/python3 "$top_srcdir/tests/st-compare.py" --manifest \
        "$out.safetensors" "$cases/MANIFEST.json" >&2 ||
        fail "$base: tensors differ from MANIFEST.json"
    case $base in
    *module_prefix* | checkpoint_nested*)
        grep -q "stripped the prefix 'module.'" "$tmp/err" ||
            fail "$base: the stripped prefix was not reported"
        ;;
    esac
done
[ "$n" -ge 7 ] || fail "only $n files in '$cases'"
finish
