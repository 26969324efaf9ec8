#!/bin/sh
# Hostile PyTorch files (tests/make-torch-files.py --hostile): globals such
# as posix.system or builtins.eval in __reduce__ payloads, deep nesting,
# storage keys outside the archive, short records and truncated files.
# Each is refused with its error line and exit 1; nothing runs (the
# payload would create a marker file) and no output is left behind.

. "$top_srcdir/tests/lib.sh"

need_torch
work=$top_builddir/tests/work/convert-hostile
marker=$tmp/marker
rm -rf "$work"
mkdir -p "$work/out" || exit 1
"$PYTHON_TORCH" "$top_srcdir/tests/make-torch-files.py" "$work" "$marker" \
    --hostile || fail "make-torch-files.py failed"

tab=$(printf '\t')
n=0
while IFS=$tab read -r name file message; do
    n=$((n + 1))
    cd "$work/out" || exit 1
    expect_exit 1 "$RESNET" convert "$work/$file"
    if [ "$(wc -l <"$tmp/err")" -ne 1 ] ||
        ! grep -qF -- "$message" "$tmp/err"; then
        fail "$name: expected one line with: $message; got: $(cat "$tmp/err")"
    fi
    [ -z "$(ls -A)" ] || fail "$name: left output behind: $(ls -A)"
    [ ! -e "$marker" ] || fail "$name: the payload ran"
done <"$work/hostile.tsv"
[ "$n" -ge 10 ] || fail "only $n hostile files were made"

# The payloads do run when PyTorch loads them: the test can fail.
for f in hostile-system.pth hostile-protocol4.pth; do
    rm -f "$marker"
    "$PYTHON_TORCH" -c 'import sys, torch; torch.load(sys.argv[1])' \
        "$work/$f" >/dev/null 2>&1
    [ -e "$marker" ] || fail "the payload of $f does not create the marker"
done

cd "$tmp" || exit 1
[ "$n_fail" -eq 0 ] && rm -rf "$work"
finish
