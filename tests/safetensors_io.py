"""safetensors files written by hand, for the test scripts (Debian has no
python3-safetensors): an 8-byte little-endian header length, a JSON header
padded with spaces to a multiple of 8 bytes, then the raw little-endian
tensor data at the header's offsets.

write() needs only the standard library (write-safetensors.py runs
without torch); write_tensors() takes torch tensors and imports torch when
called.
"""
import json
import os
import struct

TORCH_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16",
                "float64": "F64", "int64": "I64"}


def write(path, entries, metadata=None):
    """Writes path (by way of path.tmp) from entries, (name, dtype, shape,
    data bytes) in file order; metadata, if given, is the header's
    __metadata__, written first."""
    header = {} if metadata is None else {"__metadata__": metadata}
    blobs, offset = [], 0
    for name, dtype, shape, data in entries:
        header[name] = {"dtype": dtype, "shape": [int(d) for d in shape],
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # align the data to 8 bytes
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for blob in blobs:
            f.write(blob)
    os.replace(path + ".tmp", path)


def tensor_bytes(t):
    """The little-endian bytes of a torch tensor, whatever its dtype
    (numpy has no bfloat16: view the data as integers of its width)."""
    import torch
    width = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    t = t.detach().contiguous()
    return t.view(width[t.element_size()]).numpy().tobytes()


def write_tensors(path, tensors, metadata=None):
    """Writes a name -> torch tensor mapping, in its order."""
    write(path, ((name, TORCH_DTYPES[str(t.dtype)[len("torch."):]],
                  t.shape, tensor_bytes(t))
                 for name, t in tensors.items()), metadata)
