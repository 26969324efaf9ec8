#!/bin/sh
# classify under hostile conditions: odd list files, weights that
# overflow, a model too large for memory, stdout that fails or closes,
# odd option spellings. Always a clear message and the right status.
. "${top_srcdir:-.}/tests/lib.sh"
need_shared_data

png=$RESNET_SHARED_DATA/images/cifar10/png200
w=$RESNET_SHARED_DATA/weights/cifar10/akamaster-resnet20.safetensors
desc=$top_srcdir/models/cifar10-resnet20.json
cat=$png/cat/cat_s_000526.png
ship=$png/ship/boat_s_002757.png
cd "$tmp" || exit 99

# A list with a NUL byte, and one that never ends: refused, quickly,
# without holding more than one line.
printf '%s\0%s\n' "$cat" "$cat" > nul.txt
expect_exit 1 "$RESNET" classify -m "$desc" -w "$w" -T nul.txt
printf "resnet: cannot read 'nul.txt': line 1 is not text (it holds a NUL byte)\n" > want
expect_same want "$tmp/err"
expect_exit 1 timeout 20 "$RESNET" classify -m "$desc" -w "$w" -T /dev/zero
head -c 70000 /dev/zero | tr '\0' a > long.txt
expect_exit 1 "$RESNET" classify -m "$desc" -w "$w" -T long.txt
printf "resnet: cannot read 'long.txt': line 1 is too long\n" > want
expect_same want "$tmp/err"

# Weights whose logits overflow float32: an error for each image, not
# NaN probabilities printed as a result.
"$PYTHON_TORCH" - "$w" inf.safetensors <<'PY' || fail "cannot write inf.safetensors"
import json, struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
s, e = h["linear.weight"]["data_offsets"]
for i in range(8 + n + s, 8 + n + e, 4):
    b[i:i + 4] = struct.pack("<f", 3e38 if (i // 4) % 2 else -3e38)
open(sys.argv[2], "wb").write(b)
PY
expect_exit 1 "$RESNET" classify -m "$desc" -w inf.safetensors "$cat" "$ship"
[ -s "$tmp/out" ] && fail "results printed for overflowing logits: $(cat "$tmp/out")"
[ "$(grep -c "^resnet: cannot classify '.*': logit [0-9]* is \(NaN\|infinite\)" "$tmp/err")" -eq 2 ] ||
    fail "expected one overflow error per image: $(cat "$tmp/err")"

# A network too large for memory fails once, naming the model.
sed 's/"height": 32/"height": 20000/; s/"width": 32/"width": 20000/; s/"crop": 32/"crop": 20000/' \
    "$desc" > big.json
cp "$top_srcdir/models/cifar10-classes.txt" .
"$RESNET" classify -m big.json -w "$w" "$cat" "$ship" >out 2>err
[ $? -eq 1 ] || fail "a model too large for memory did not exit 1"
grep -q "^resnet: cannot allocate 307200.0 MB of activations for 'cifar10-resnet20': more than this machine's memory" err ||
    fail "too large: $(cat err)"
[ "$(wc -l < err)" -eq 1 ] || fail "too large: not one error line: $(cat err)"

# stdout on a full disk: exit 1 with the reason; a closed pipe: exit 1
# without dying from SIGPIPE.
expect_exit 1 sh -c "\"\$0\" classify -m \"\$1\" -w \"\$2\" \"\$3\" > /dev/full" \
    "$RESNET" "$desc" "$w" "$cat"
grep -q "^resnet: cannot write to standard output: No space left on device$" "$tmp/err" ||
    fail "/dev/full: $(cat "$tmp/err")"
ls "$png"/*/*.png > list
{ "$RESNET" classify -m "$desc" -w "$w" -j 1 -T list; echo $? > status; } | head -n 1 > /dev/null
[ "$(cat status)" = 1 ] || fail "a closed pipe gave status $(cat status), expected 1"

# Option spellings: clustered unknown short options, directories as
# models, an empty RESNET_MODEL, help help.
expect_exit 2 "$RESNET" classify -zq -m "$desc" "$cat"
head -n 1 "$tmp/err" > got
echo "resnet: unknown option '-z'" > want
expect_same want got
expect_exit 1 "$RESNET" classify -m "$top_srcdir/models/" "$cat"
echo "resnet: cannot open '$top_srcdir/models/': Is a directory" > want
expect_same want "$tmp/err"
expect_exit 2 env RESNET_MODEL= "$RESNET" classify "$cat"
expect_exit 0 "$RESNET" help help

# File names with a tab, a quote and a byte that is not UTF-8: text
# output quotes them so each result stays one line; JSON stays valid.
odd=$(printf 'a\tb"\377.png')
cp "$cat" "$odd"
expect_exit 0 "$RESNET" classify -m "$desc" -w "$w" -k 1 "$odd"
printf '"a\\tb\\"\377.png"\t1\n' > want
cut -f1,2 "$tmp/out" > got
expect_same want got
expect_exit 0 "$RESNET" classify -m "$desc" -w "$w" -k 1 --format json "$odd"
"$PYTHON_TORCH" -c '
import json, sys
f = json.loads(open(sys.argv[1], encoding="utf-8").read())["file"]
assert f == "a\tb\"\ufffd.png", repr(f)
' "$tmp/out" || fail "json file name: $(cat "$tmp/out")"

finish
