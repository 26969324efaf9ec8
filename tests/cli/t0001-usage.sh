#!/bin/sh
# The command line: usage, help, and usage mistakes exit 2 with one
# message line and the usage line on stderr.
. "${top_srcdir:-.}/tests/lib.sh"

expect_exit 2 "$RESNET"
grep -q '^usage: resnet' "$tmp/err" || fail "no usage on stderr without arguments"
grep -q 'classify' "$tmp/err" || fail "the command list does not name classify"

expect_exit 0 "$RESNET" --help
grep -q '^usage: resnet' "$tmp/out" || fail "--help prints no usage on stdout"

expect_exit 0 "$RESNET" --version
grep -q '^resnet [0-9]' "$tmp/out" || fail "--version prints '$(cat "$tmp/out")'"

expect_exit 2 "$RESNET" frobnicate
printf "resnet: 'frobnicate' is not a resnet command\n" > "$tmp/want"
head -n 1 "$tmp/err" > "$tmp/got"
expect_same "$tmp/want" "$tmp/got"

# help <cmd> is <cmd> --help, on stdout with status 0.
expect_exit 0 "$RESNET" help classify
cp "$tmp/out" "$tmp/help1"
expect_exit 0 "$RESNET" classify --help
expect_same "$tmp/help1" "$tmp/out"
grep -q '^usage: resnet classify' "$tmp/out" || fail "classify --help has no usage"

# Usage mistakes: one message line, then the usage line; exit 2.
check_usage() {
    want=$1
    shift
    expect_exit 2 "$RESNET" "$@"
    printf 'resnet: %s\n' "$want" > "$tmp/want"
    head -n 1 "$tmp/err" > "$tmp/got"
    expect_same "$tmp/want" "$tmp/got"
    sed -n 2p "$tmp/err" | grep -q '^usage: resnet classify' ||
        fail "'$*' does not print the usage line after the message"
}
check_usage "no model given: use -m <model>" classify x.png
check_usage "no images given" classify -m resnet18
check_usage "-k needs a positive number, not '0'" classify -m m -k 0 x.png
check_usage "-k needs a positive number, not 'many'" classify -m m --top=many x.png
check_usage "unknown format 'xml' (text, json or csv)" classify -m m --format xml x.png
check_usage "unknown option '--bogus'" classify --bogus
check_usage "option '-m' needs a value" classify -m

# A model that is not there is a failure (1), not a usage mistake.
expect_exit 1 "$RESNET" classify -m no-such-model x.png
grep -q "^resnet: cannot find 'no-such-model'" "$tmp/err" ||
    fail "missing model: $(cat "$tmp/err")"

finish
