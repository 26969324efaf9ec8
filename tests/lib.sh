# Shared helpers for the shell tests; sourced, not run.
# The test harness exports RESNET, top_srcdir, top_builddir,
# RESNET_SHARED_DATA and RESNET_SHARED_CASES (see Makefile.am).

set -u

: "${RESNET:=${top_builddir:-.}/resnet}"
: "${top_srcdir:=.}"
: "${top_builddir:=.}"
: "${RESNET_SHARED_DATA:=$top_srcdir/../shared/data}"
: "${RESNET_SHARED_CASES:=$(dirname "$RESNET_SHARED_DATA")/cases}"
: "${PYTHON_TORCH:=/usr/bin/python3}"

# A fresh scratch folder per test, removed on exit.
tmp=$(mktemp -d "${TMPDIR:-/tmp}/resnet-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

n_fail=0

fail() {
    echo "FAIL: $*" >&2
    n_fail=$((n_fail + 1))
}

# Skips the whole test with a visible reason; with RESNET_REQUIRE_ALL=1
# (as .ci/run sets) a skip is a hard failure instead.
skip() {
    echo "SKIP: $*" >&2
    if [ "${RESNET_REQUIRE_ALL:-0}" = 1 ]; then
        echo "ERROR: RESNET_REQUIRE_ALL=1 forbids skipping" >&2
        exit 99
    fi
    exit 77
}

need_shared_data() {
    [ -d "$RESNET_SHARED_DATA" ] ||
        skip "shared data not found at '$RESNET_SHARED_DATA' (set RESNET_SHARED_DATA)"
}

need_shared_cases() {
    [ -d "$RESNET_SHARED_CASES" ] ||
        skip "shared cases not found at '$RESNET_SHARED_CASES' (set RESNET_SHARED_CASES)"
}

need_torch() {
    "$PYTHON_TORCH" -c 'import torch, torchvision, PIL' 2>/dev/null ||
        skip "PyTorch, torchvision and PIL are needed (Debian: python3-torch python3-torchvision python3-pil)"
}

# expect_exit N CMD...: runs CMD, fails unless it exits with N.
# Its stdout and stderr are left in $tmp/out and $tmp/err.
expect_exit() {
    _want=$1
    shift
    "$@" >"$tmp/out" 2>"$tmp/err"
    _got=$?
    if [ "$_got" -ne "$_want" ]; then
        fail "'$*' exited $_got, expected $_want; stderr: $(head -c 400 "$tmp/err")"
    fi
    # A signal (128+n) is always a failure.
    if [ "$_got" -gt 128 ]; then
        fail "'$*' died from signal $((_got - 128))"
    fi
}

# expect_same EXPECTED ACTUAL: byte-for-byte file comparison.
expect_same() {
    if ! cmp -s "$1" "$2"; then
        fail "$2 differs from $1:"
        diff -u "$1" "$2" | head -20 >&2
    fi
}

# Ends the test: exit 1 if anything failed.
finish() {
    if [ "$n_fail" -ne 0 ]; then
        echo "$n_fail check(s) failed" >&2
        exit 1
    fi
    exit 0
}
