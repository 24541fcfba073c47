"""The safetensors reader holds files to the format's rules (https://github.com/huggingface/safetensors, "Format"):
"Duplicate keys are disallowed" and "The byte buffer needs to be entirely indexed, and cannot contain holes".

Every crafted file here is one the safetensors library itself refuses (checked below as the oracle), except a key
given twice with identical entries, which the library reads (the last one wins) and we refuse, as the spec says."""

import json
import struct

import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from gptoss.export.errors import CheckpointError
from gptoss.export.safetensors_io import SafetensorsFile, SafetensorsWriter


def entry(name: str, n: int, begin: int) -> str:
    """A U8 tensor `name` of n bytes at data offset `begin`, as header JSON text."""
    return f'"{name}":{{"dtype":"U8","shape":[{n}],"data_offsets":[{begin},{begin + n}]}}'


def craft(path, header: str, data: bytes):
    raw = header.encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


BAD = {
    "duplicate tensor": ("{" + entry("a", 4, 0) + "," + entry("a", 4, 4) + "}", 8, "the header holds the key 'a' twice"),
    "gap": ("{" + entry("a", 4, 0) + "," + entry("b", 4, 6) + "}", 10,
            "2 bytes between tensors 'a' and 'b' belong to no tensor"),
    "gap at start": ("{" + entry("a", 4, 2) + "}", 6, "2 bytes before the first tensor 'a' belong to no tensor"),
    "overlap": ("{" + entry("a", 4, 0) + "," + entry("b", 4, 2) + "}", 6, "tensors 'a' and 'b' overlap"),
    "trailing": ("{" + entry("a", 4, 0) + "}", 6, "2 trailing bytes after the last tensor 'a'"),
    "trailing, no tensors": ("{}", 2, "2 trailing bytes after the header (the file holds no tensors)"),
    "offsets past the end": ("{" + entry("a", 4, 0) + "}", 2, "tensor 'a' needs bytes up to"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_layouts_are_refused_naming_file_and_tensor(tmp_path, case):
    header, nbytes, message = BAD[case]
    path = craft(tmp_path / "bad.safetensors", header, b"\x01" * nbytes)
    with pytest.raises(CheckpointError) as e:
        SafetensorsFile(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(Exception):                       # the oracle: the library refuses the same file
        with safe_open(str(path), framework="np") as f:
            [f.get_tensor(k) for k in f.keys()]


def test_a_key_twice_is_refused_even_where_the_library_takes_the_last(tmp_path):
    path = craft(tmp_path / "dup.safetensors", "{" + entry("a", 4, 0) + "," + entry("a", 4, 0) + "}", b"\x01" * 4)
    with safe_open(str(path), framework="np") as f:
        assert list(f.keys()) == ["a"]
    with pytest.raises(CheckpointError, match="holds the key 'a' twice"):
        SafetensorsFile(path)
    inner = '{"a":{"dtype":"U8","dtype":"F32","shape":[4],"data_offsets":[0,4]}}'
    with pytest.raises(CheckpointError, match="holds the key 'dtype' twice"):
        SafetensorsFile(craft(tmp_path / "dup2.safetensors", inner, b"\x01" * 4))


def test_header_must_be_an_object(tmp_path):
    with pytest.raises(CheckpointError, match="header is not a JSON object"):
        SafetensorsFile(craft(tmp_path / "list.safetensors", "[]", b""))


def test_well_formed_files_still_read(tmp_path):
    """Empty tensors take no bytes (allowed by the spec); the library's own files and ours read back exactly."""
    path = craft(tmp_path / "empty.safetensors", "{" + entry("e", 0, 0) + "," + entry("b", 4, 0) + "}", b"\x01\x02\x03\x04")
    st = SafetensorsFile(path)
    assert st.get("e").shape == (0,) and st.get("b").tolist() == [1, 2, 3, 4]
    tensors = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "y": np.arange(5, dtype=np.uint8),
               "z": np.zeros((0, 3), np.float16)}
    save_file(tensors, str(tmp_path / "lib.safetensors"), metadata={"format": "pt"})
    ours = SafetensorsFile(tmp_path / "lib.safetensors")
    for k, v in tensors.items():
        assert np.array_equal(ours.get(k), v)
    with SafetensorsWriter(tmp_path / "w.safetensors", [("a", (2, 3), "BF16"), ("b", (0,), "U8")]) as w:
        w.write("a", np.ones((2, 3), ml_dtypes.bfloat16))
        w.write("b", np.zeros(0, np.uint8))
    assert SafetensorsFile(tmp_path / "w.safetensors").keys() == ["a", "b"]


def test_header_padding_is_allowed(tmp_path):
    header = "{" + entry("a", 4, 0) + "}"
    header += " " * (-len(header) % 8)
    assert SafetensorsFile(craft(tmp_path / "pad.safetensors", header, b"\x00" * 4)).keys() == ["a"]
    json.loads(header)  # the padding the library writes is JSON whitespace
