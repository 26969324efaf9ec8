#!/bin/sh
# resnet convert: help, usage mistakes, missing and foreign inputs, and
# outputs kept unless --force. Needs nothing but the binary.

. "$top_srcdir/tests/lib.sh"

cd "$tmp" || exit 1

# A minimal safetensors file holding one F32 tensor 'a' = [1.5].
header='{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
while [ $((${#header} % 8)) -ne 0 ]; do header="$header "; done
len=$(printf '%03o' ${#header})
printf "\\$len\\0\\0\\0\\0\\0\\0\\0%s\\0\\0\\300\\77" "$header" >one.safetensors

# --help and help convert print the usage on stdout.
expect_exit 0 "$RESNET" convert --help
head -1 "$tmp/out" | grep -q '^usage: resnet convert ' ||
    fail "convert --help printed no usage"
cp "$tmp/out" help.txt
expect_exit 0 "$RESNET" help convert
expect_same help.txt "$tmp/out"

# Usage mistakes exit 2 with one message and the synopsis.
expect_exit 2 "$RESNET" convert
echo "resnet: no input given" >want
sed -n '/^usage:/,/^$/p' help.txt | sed '/^$/d' >>want
expect_same want "$tmp/err"
expect_exit 2 "$RESNET" convert --dtype f8 one.safetensors
head -1 "$tmp/err" >got
echo "resnet: unknown dtype 'f8' (f32, f16 or bf16)" >want
expect_same want got
expect_exit 2 "$RESNET" convert --bogus one.safetensors
expect_exit 2 "$RESNET" convert a.pth b.pth
expect_exit 2 "$RESNET" convert -o x.json one.safetensors
expect_exit 2 "$RESNET" convert -o '' one.safetensors
head -1 "$tmp/err" >got
echo "resnet: -o needs a file name, not ''" >want
expect_same want got
expect_exit 2 "$RESNET" convert --output= one.safetensors

# Missing and foreign inputs fail with one line naming the file.
expect_exit 1 "$RESNET" convert nope.pth
echo "resnet: cannot open 'nope.pth': No such file or directory" >want
expect_same want "$tmp/err"
echo "just text" >text.pth
expect_exit 1 "$RESNET" convert text.pth
echo "resnet: 'text.pth' is not a PyTorch file, safetensors file or Git LFS pointer" \
    >want
expect_same want "$tmp/err"

# A file that starts like a legacy PyTorch pickle but breaks off is
# named as no PyTorch file, not as a bad pickle opcode; pointers,
# folders and FIFOs are worded as classify and inspect word them.
printf '\200\002\212\001\154\374\234\106.' >magic.pth
expect_exit 1 "$RESNET" convert magic.pth
echo "resnet: 'magic.pth' is not a PyTorch file, safetensors file or Git LFS pointer" \
    >want
expect_same want "$tmp/err"
printf '%s\n' "version https://git-lfs.github.com/spec/v1" \
    "oid sha256:0000" "size 1" >lfs.pth
expect_exit 1 "$RESNET" convert lfs.pth
echo "resnet: 'lfs.pth' is a Git LFS pointer, not weights (run git lfs pull)" \
    >want
expect_same want "$tmp/err"
mkdir dir.pth
expect_exit 1 "$RESNET" convert dir.pth
echo "resnet: cannot read 'dir.pth': Is a directory" >want
expect_same want "$tmp/err"
if mkfifo fifo.pth 2>/dev/null; then
    expect_exit 1 "$RESNET" convert fifo.pth
    echo "resnet: cannot read 'fifo.pth': not a regular file" >want
    expect_same want "$tmp/err"
    rm -f fifo.pth
fi
rmdir dir.pth
rm -f magic.pth lfs.pth
[ ! -e text.safetensors ] || fail "a failed convert left text.safetensors"

# Tensors that fit no ResNet still convert, with a warning naming them.
expect_exit 0 "$RESNET" convert one.safetensors -o out.safetensors
printf '%s\t%s\t%s\n' - out.safetensors - >want
expect_same want "$tmp/out"
grep -q "^resnet: warning: wrote no description: .* 1 tensor fits no ResNet: 'a'" \
    "$tmp/err" || fail "no warning naming tensor 'a': $(cat "$tmp/err")"
[ ! -e out.json ] || fail "a description was written for no network"
expect_exit 0 "$RESNET" -q convert one.safetensors -o quiet.safetensors
[ ! -s "$tmp/err" ] || fail "-q printed: $(cat "$tmp/err")"

# A success line that cannot be written is a failure; the files stay.
if [ -w /dev/full ]; then
    "$RESNET" -q convert one.safetensors -o full.safetensors >/dev/full \
        2>"$tmp/err"
    rc=$?
    [ "$rc" -eq 1 ] || fail "convert >/dev/full exited $rc, expected 1"
    echo "resnet: cannot write to standard output: No space left on device" \
        >want
    expect_same want "$tmp/err"
    [ -s full.safetensors ] || fail "the weights were removed after /dev/full"
fi

# An existing output is kept unless --force.
cp out.safetensors before
expect_exit 1 "$RESNET" convert -o out.safetensors one.safetensors
echo "resnet: cannot write 'out.safetensors': file exists (use --force to overwrite)" >want
expect_same want "$tmp/err"
expect_exit 0 "$RESNET" -q convert --force --output=out.safetensors \
    one.safetensors
expect_same before out.safetensors

# --arch must name a description.
expect_exit 1 "$RESNET" convert --arch no-such-model one.safetensors
grep -q "^resnet: cannot find 'no-such-model'" "$tmp/err" ||
    fail "--arch no-such-model: $(cat "$tmp/err")"
[ "$(ls -A | grep -c '^\.')" -eq 0 ] || fail "temporary files left: $(ls -A)"

finish
