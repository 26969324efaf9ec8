#!/bin/sh
# classify's output formats, -k, -j and -T.
. "${top_srcdir:-.}/tests/lib.sh"
need_shared_data

png=$RESNET_SHARED_DATA/images/cifar10/png200
w=$RESNET_SHARED_DATA/weights/cifar10/akamaster-resnet20.safetensors
desc=$top_srcdir/models/cifar10-resnet20.json
cp "$png/cat/cat_s_000526.png" "$tmp/cat.png"
cp "$png/ship/boat_s_002757.png" "$tmp/ship.png"
cp "$png/cat/cat_s_000526.png" "$tmp/a,\"quoted\".png"
cd "$tmp" || exit 99

# Text: file, rank, probability, index, label; tab-separated, k lines.
expect_exit 0 "$RESNET" classify -m "$desc" -w "$w" -k 3 cat.png
awk -F'\t' 'NF != 5 || $1 != "cat.png" || $2 != NR || $3 !~ /^[01]\.[0-9][0-9][0-9][0-9][0-9][0-9]$/ ||
    $4 !~ /^[0-9]$/ {bad = 1} END {exit bad || NR != 3}' out ||
    fail "text output malformed: $(cat out)"
[ "$(head -n 1 out | cut -f4,5)" = "$(printf '3\tcat')" ] ||
    fail "cat.png is not a cat: $(head -n 1 out)"

# -k above the number of classes lists them all, probabilities summing to 1.
expect_exit 0 "$RESNET" classify -m "$desc" -w "$w" -k 50 cat.png
[ "$(wc -l < out)" -eq 10 ] || fail "-k 50 on 10 classes gave $(wc -l < out) lines"
awk -F'\t' '{s += $3} END {exit !(s > 0.99999 && s < 1.00001)}' out ||
    fail "probabilities do not sum to 1"

# JSON with logits: parses, ten logits, softmax of them is prob.
expect_exit 0 "$RESNET" classify -m "$desc" -w "$w" -k 2 --format json --logits cat.png 'a,"quoted".png'
"$PYTHON_TORCH" - out <<'PY' || fail "json output malformed: $(cat out)"
import json, math, sys
lines = open(sys.argv[1]).read().splitlines()
assert len(lines) == 2, lines
names = [json.loads(l)["file"] for l in lines]
assert names == ["cat.png", 'a,"quoted".png'], names
for l in lines:
    o = json.loads(l)
    assert list(o) == ["file", "top", "logits"], list(o)
    z = o["logits"]
    assert len(z) == 10 and len(o["top"]) == 2
    m = max(z)
    e = [math.exp(v - m) for v in z]
    for t in o["top"]:
        p = e[t["index"]] / sum(e)
        assert abs(p - t["prob"]) < 1e-6, (p, t)
    assert o["top"][0]["label"] == "cat"
PY

# CSV: a header, RFC 4180 quoting, a logit column with --logits.
expect_exit 0 "$RESNET" classify -m "$desc" -w "$w" -k 1 --format csv --logits 'a,"quoted".png'
printf 'file,rank,index,label,prob,logit\n' > want
head -n 1 out > got
expect_same want got
sed -n 2p out | grep -q '^"a,""quoted"".png",1,3,cat,0\.[0-9]*,[-0-9.e]*$' ||
    fail "csv row malformed: $(sed -n 2p out)"

# -j changes nothing but speed; -T - reads the list from stdin.
ls "$png"/*/*.png | head -n 40 > list
expect_exit 0 "$RESNET" classify -m "$desc" -w "$w" -j 1 -T list
mv out j1
expect_exit 0 "$RESNET" classify -m "$desc" -w "$w" -j 2 -T - < list
expect_same j1 out
[ "$(cut -f1 j1 | uniq)" = "$(cat list)" ] || fail "results not in input order"

# An image alone gives the same logits, to the bit, as in a batch.
expect_exit 0 "$RESNET" classify -m "$desc" -w "$w" --format json --logits cat.png
mv out alone
expect_exit 0 "$RESNET" classify -m "$desc" -w "$w" --format json --logits -j 2 cat.png ship.png cat.png
head -n 1 out > batch
expect_same alone batch
sed -n 3p out > batch
expect_same alone batch

finish
