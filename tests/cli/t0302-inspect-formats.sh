#!/bin/sh
# resnet inspect's output formats: JSON parses and holds the summary and
# every layer, the dot output is accepted by Graphviz, the per-layer table
# fits in 100 columns, --input changes the shapes and MACs, and usage
# mistakes exit 2.
. "${top_srcdir:-.}/tests/lib.sh"

models="resnet18 resnet50 resnet152 resnext101_32x8d wide_resnet101_2
        cifar10-resnet20 cifar10-resnet110 seed-resnet"
py=/usr/bin/python3
[ -x "$py" ] || skip "Debian's /usr/bin/python3 is needed to read the JSON"

for m in $models; do
    desc="$top_srcdir/models/$m.json"

    # JSON: one object; the layers add up to the summary's totals.
    expect_exit 0 "$RESNET" inspect -m "$desc" --format json
    "$py" -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["model"] == sys.argv[2], d["model"]
assert d["params"] == sum(l["params"] for l in d["layers"])
assert d["macs"] == sum(l["macs"] for l in d["layers"])
assert abs(sum(l["share"] for l in d["layers"]) - 1) < 1e-4
assert sum(s["blocks"] for s in d["stages"]) == d["blocks"]
# The peak activation memory, by a naive loop over the layers: a value
# lives from the layer writing it to the last reading it (the input from
# the start, the logits to the end), 4 bytes an element.
L = d["layers"]
size = {0: 4 * d["input"][0] * d["input"][1] * d["input"][2]}
span = {0: [-1, -1]}
for i, l in enumerate(L):
    for v in (l["in"], l["in2"]):
        if v >= 0:
            span[v][1] = i
    if l["out"] != l["in"]:
        c, h, w = l["output"]
        size[l["out"]] = 4 * c * h * w
        span[l["out"]] = [i, i if i < len(L) - 1 else len(L)]
live = [sum(size[v] for v in span if span[v][0] <= i <= span[v][1])
        for i in range(len(L))]
peak = max(live)
assert d["peak_activation_bytes"] == peak, (d["peak_activation_bytes"], peak)
assert L[live.index(peak)]["name"] == d["peak_activation_layer"]
' "$tmp/out" "$m" || fail "$m: bad JSON: $(head -c 300 "$tmp/out")"

    # The table: a header, one row per layer, at most 100 columns.
    expect_exit 0 "$RESNET" inspect -m "$desc" --per-layer
    wide=$(awk 'length > 100' "$tmp/out" | head -n 1)
    [ -z "$wide" ] || fail "$m: table line over 100 columns: '$wide'"
    grep -q '^name  *kind  *kernel  *stride  *pad  *groups  *output  *params  *macs  *share$' \
        "$tmp/out" || fail "$m: no table header"
    n_rows=$(sed -n '/^name /,$p' "$tmp/out" | wc -l)
    n_layers=$("$RESNET" inspect -m "$desc" --format json |
        "$py" -c 'import json, sys; print(len(json.load(sys.stdin)["layers"]))')
    [ "$n_rows" -eq $((n_layers + 1)) ] ||
        fail "$m: $n_rows table lines for $n_layers layers"

    # dot: one node per block graph element, accepted by Graphviz.
    expect_exit 0 "$RESNET" inspect -m "$desc" --format dot
    cp "$tmp/out" "$tmp/$m.dot"
    grep -q '^digraph ' "$tmp/$m.dot" || fail "$m: dot output is no digraph"
done

# Graphviz renders every graph.
if command -v dot >/dev/null 2>&1; then
    for m in $models; do
        dot -Tsvg "$tmp/$m.dot" >"$tmp/$m.svg" 2>"$tmp/dot-err" ||
            fail "$m: dot -Tsvg refused the graph: $(head -c 300 "$tmp/dot-err")"
        [ -s "$tmp/dot-err" ] && fail "$m: dot warns: $(head -c 300 "$tmp/dot-err")"
        grep -q '<svg' "$tmp/$m.svg" || fail "$m: dot made no SVG"
    done
    # Each block is a cluster named after its shortcut.
    n=$(grep -c 'label="layer[0-9]*\.[0-9]*: identity shortcut"' "$tmp/resnet50.dot")
    [ "$n" -eq 12 ] || fail "resnet50: $n identity blocks in the graph, expected 12"
    n=$(grep -c 'label="layer[0-9]*\.[0-9]*: projection shortcut"' "$tmp/resnet50.dot")
    [ "$n" -eq 4 ] || fail "resnet50: $n projection blocks in the graph, expected 4"
    n=$(grep -c 'label="layer[0-9]*\.[0-9]*: pad shortcut"' "$tmp/cifar10-resnet20.dot")
    [ "$n" -eq 2 ] || fail "cifar10-resnet20: $n pad blocks in the graph, expected 2"
else
    echo "SKIP: Graphviz's dot is not installed (Debian: graphviz); dot output not rendered" >&2
    [ "${RESNET_REQUIRE_ALL:-0}" = 1 ] && fail "RESNET_REQUIRE_ALL=1 needs Graphviz"
fi

# By hand: ResNet-20's worst point is its first block's second conv, with
# the block input, the first conv's output and its own, 16x32x32 floats each.
"$RESNET" inspect -m "$top_srcdir/models/cifar10-resnet20.json" >"$tmp/text"
grep -qx 'activations:  196608 bytes at peak (196.61 kB, at layer1.0.conv2)' \
    "$tmp/text" || fail "resnet20 peak: $(grep '^activations' "$tmp/text")"

# --input: 64x64 has (64/224)^2 of the conv MACs of 224x224 for resnet50
# up to the rounding of the strided sizes; the parameters do not change.
"$RESNET" inspect -m "$top_srcdir/models/resnet50.json" --format json >"$tmp/224" &&
"$RESNET" inspect -m "$top_srcdir/models/resnet50.json" --input 64x64 \
    --format json >"$tmp/64" || fail "resnet50 --input 64x64 failed"
"$py" -c '
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
assert b["input"] == [3, 64, 64], b["input"]
assert a["params"] == b["params"]
assert a["macs"] == 4089184256 and b["macs"] < a["macs"] / 10, b["macs"]
assert b["layers"][0]["output"] == [64, 32, 32], b["layers"][0]
' "$tmp/224" "$tmp/64" || fail "--input 64x64 did not change the MACs"
"$RESNET" inspect -m "$top_srcdir/models/resnet50.json" --input 64x64 >"$tmp/text"
grep -q '^input:        3x64x64$' "$tmp/text" || fail "--input 64x64: $(head -n 3 "$tmp/text")"

# Malformed sizes, like other usage mistakes, exit 2.
check_usage() {
    msg=$1
    shift
    expect_exit 2 "$RESNET" inspect "$@"
    printf 'resnet: %s\n' "$msg" >"$tmp/want"
    head -n 1 "$tmp/err" >"$tmp/got"
    expect_same "$tmp/want" "$tmp/got"
    sed -n 2p "$tmp/err" | grep -q '^usage: resnet inspect' ||
        fail "'$*' does not print the usage line after the message"
}
check_usage "--input needs <h>x<w>, such as 224x224, not '64'" -m m --input 64
check_usage "--input needs <h>x<w>, such as 224x224, not '0x5'" -m m --input=0x5
check_usage "unknown format 'svg' (text, json or dot)" -m m --format svg
check_usage "no model given: use -m <model>" --per-layer
check_usage "unexpected argument 'extra'" -m m extra

expect_exit 0 "$RESNET" help inspect
grep -q '^usage: resnet inspect' "$tmp/out" || fail "help inspect prints no usage"

finish
