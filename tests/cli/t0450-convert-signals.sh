#!/bin/sh
# resnet convert stopped part way: by a file size limit (ulimit -f) it
# fails with an error and exit 1, and by SIGTERM, SIGINT or SIGHUP it
# dies from that signal; either way no temporary file is left beside
# the target. Needs nothing but the binary.

. "$top_srcdir/tests/lib.sh"

cd "$tmp" || exit 1

# A safetensors file of one F32 tensor 'a' of n zeros (sparse on disk).
make_input() {
    _n=$1
    _header="{\"a\":{\"dtype\":\"F32\",\"shape\":[$_n],\"data_offsets\":[0,$((_n * 4))]}}"
    while [ $((${#_header} % 8)) -ne 0 ]; do _header="$_header "; done
    _len=$(printf '%03o' ${#_header})
    printf "\\$_len\\0\\0\\0\\0\\0\\0\\0%s" "$_header" >"$2"
    truncate -s $((8 + ${#_header} + _n * 4)) "$2"
}

temps_left() {
    ls -A | grep '^\.out\.safetensors\.' || true
}

# A file size limit: the write fails with EFBIG and is cleaned up.
make_input 16384 small.safetensors
(
    ulimit -f 16 || exit 77
    exec "$RESNET" -q convert -o out.safetensors small.safetensors \
        >"$tmp/out" 2>"$tmp/err"
)
rc=$?
if [ "$rc" -ne 77 ]; then
    [ "$rc" -eq 1 ] || fail "convert under ulimit -f exited $rc, expected 1"
    echo "resnet: cannot write 'out.safetensors': File too large" >want
    expect_same want "$tmp/err"
    [ -z "$(temps_left)" ] || fail "ulimit -f left $(temps_left)"
    [ ! -e out.safetensors ] || fail "ulimit -f left out.safetensors"
fi

# A signal while the weights are written: 256 MiB give a window of a
# good part of a second; if the run ends before the signal, say so.
# A shell without job control starts background jobs with SIGINT
# ignored, which convert then keeps ignoring: undo that where env can.
make_input $((64 << 20)) big.safetensors
sigs="TERM HUP"
dfl=
if env --default-signal=INT true 2>/dev/null; then
    sigs="TERM INT HUP"
    dfl="env --default-signal=INT"
fi
for sig in $sigs; do
    rm -f out.safetensors out.json .out.safetensors.*
    $dfl "$RESNET" -q convert -o out.safetensors big.safetensors >/dev/null \
        2>"$tmp/err" &
    pid=$!
    i=0
    while [ -z "$(temps_left)" ] && kill -0 "$pid" 2>/dev/null &&
        [ "$i" -lt 2000 ]; do
        sleep 0.005
        i=$((i + 1))
    done
    sent=no
    if [ -n "$(temps_left)" ] && kill -s "$sig" "$pid" 2>/dev/null; then
        sent=yes
    fi
    wait "$pid"
    rc=$?
    if [ "$sent" = no ] || [ "$rc" -eq 0 ]; then
        echo "note: convert ended before SIG$sig could be sent" >&2
        continue
    fi
    [ "$rc" -gt 128 ] || fail "SIG$sig: convert exited $rc, not by the signal"
    [ -z "$(temps_left)" ] || fail "SIG$sig left $(temps_left)"
    [ ! -e out.safetensors ] || fail "SIG$sig left out.safetensors"
done
rm -f big.safetensors small.safetensors

finish
