"""The bounded GGUF reader (issue 12, item 9): a small crafted file cannot make the import
allocate far more than its size, absurd counts and lengths are refused naming the field, and
metadata of the wrong type is a clear error, not a traceback."""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter

from qwenchat.engine import gguf_reader
from qwenchat.engine.errors import EngineError, ModelConfigError, WeightsError
from qwenchat.engine.gguf import import_gguf, read_gguf_fields

U8, U32, STRING, ARRAY, U64 = 0, 4, 8, 9, 10


def _str(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return _str(key) + struct.pack("<I", vtype) + payload


def array(itype: int, count: int, payload: bytes) -> bytes:
    return struct.pack("<IQ", itype, count) + payload


def crafted(path: Path, *fields: bytes, n_tensors: int = 0) -> Path:
    """A GGUF v3 file made of the given key/value fields (qwen2 first), no tensors."""
    body = [kv("general.architecture", STRING, _str("qwen2")), *fields]
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, n_tensors, len(body)) + b"".join(body))
    return path


def test_big_metadata_arrays_cost_memory_in_proportion_to_the_file(tmp_path):
    """1.2 MB of arrays (a million bytes, 100,000 empty strings): gguf's reader spent about
    1.5 KB per element here; the import must stay within a small multiple of the file."""
    path = crafted(
        tmp_path / "fat.gguf",
        kv("tokenizer.ggml.token_type", ARRAY, array(U8, 1_000_000, bytes(1_000_000))),
        kv("tokenizer.ggml.tokens", ARRAY, array(STRING, 100_000, _str("") * 100_000)),
    )
    assert path.stat().st_size < 2_000_000
    tracemalloc.start()
    try:
        with pytest.raises(EngineError, match="lacks the metadata field"):
            import_gguf(path, tmp_path / "out")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 25 * path.stat().st_size, f"peak {peak:,} bytes for a {path.stat().st_size:,}-byte file"
    metadata = gguf_reader.read(path).metadata
    assert isinstance(metadata["tokenizer.ggml.token_type"], np.ndarray)  # a view, not a million objects
    assert metadata["tokenizer.ggml.tokens"][:2] == ["", ""]


@pytest.mark.parametrize(
    "field,expected",
    [
        (kv("tokenizer.ggml.tokens", ARRAY, array(STRING, 2**60, _str("a"))), r"'tokenizer\.ggml\.tokens' claims 1,152,921,504,606,846,976 elements"),
        (kv("tokenizer.ggml.scores", ARRAY, array(U32, 2**40, bytes(64))), r"'tokenizer\.ggml\.scores' claims"),
        (kv("tokenizer.ggml.merges", ARRAY, array(ARRAY, 2**30, bytes(64))), r"'tokenizer\.ggml\.merges' claims"),
        (kv("general.name", STRING, struct.pack("<Q", 2**62) + b"abc"), r"the text of field 'general\.name' needs"),
        (kv("nested", ARRAY, array(ARRAY, 1, array(ARRAY, 1, array(ARRAY, 1, array(ARRAY, 1, array(U8, 0, b"")))))),
         r"'nested' nests arrays more than \d deep"),
        (kv("odd", 77, b"\x00" * 8), r"'odd' has an unknown value type 77"),
    ],
)
def test_absurd_counts_and_lengths_are_refused_naming_the_field(tmp_path, field, expected):
    path = crafted(tmp_path / "bad.gguf", field)
    with pytest.raises(WeightsError, match=expected) as err:
        import_gguf(path, tmp_path / "out")
    assert "damaged" in str(err.value) and err.value.hint
    with pytest.raises(WeightsError, match=expected):
        read_gguf_fields(path, {"general.name", "missing.key"})


def test_absurd_tensor_and_field_counts_are_refused(tmp_path):
    path = crafted(tmp_path / "tensors.gguf", n_tensors=2**50)
    with pytest.raises(WeightsError, match=r"1,125,899,906,842,624 tensor descriptions needs"):
        import_gguf(path, tmp_path / "out")
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 2**55))
    with pytest.raises(WeightsError, match=r"metadata fields needs"):
        read_gguf_fields(path, {"general.name"})


def _minimal(path: Path, **fields) -> Path:
    w = GGUFWriter(str(path), "qwen2")
    for key, value in fields.items():
        name = key.replace("__", ".")
        if isinstance(value, str):
            w.add_string(name, value)
        elif isinstance(value, list):
            w.add_array(name, value)
        else:
            w.add_uint32(name, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize(
    "fields,expected",
    [
        ({"qwen2__embedding_length": "wide"}, r"qwen2\.embedding_length is 'wide', not a whole number"),
        ({"qwen2__embedding_length": 64, "qwen2__block_count": [1, 2]}, r"qwen2\.block_count is array"),
        ({"qwen2__embedding_length": 64, "qwen2__block_count": 0}, r"qwen2\.block_count is 0"),
        ({"qwen2__embedding_length": 64, "qwen2__block_count": 1000, "qwen2__attention__head_count": 4,
          "qwen2__feed_forward_length": 96}, r"claims 1,000 layers but holds only 0 tensors"),
        ({"qwen2__embedding_length": 64, "qwen2__block_count": 1, "qwen2__attention__head_count": 4,
          "qwen2__feed_forward_length": 96, "qwen2__rope__freq_base": "fast"}, r"qwen2\.rope\.freq_base is 'fast'"),
        ({"qwen2__embedding_length": 64, "qwen2__block_count": 1, "qwen2__attention__head_count": 4,
          "qwen2__feed_forward_length": 96, "tokenizer__ggml__eos_token_id": "end"}, r"tokenizer\.ggml\.eos_token_id is 'end'"),
    ],
)
def test_metadata_of_the_wrong_type_is_a_clear_error(tmp_path, fields, expected):
    path = _minimal(tmp_path / "typed.gguf", **fields)
    with pytest.raises(EngineError, match=expected) as err:
        import_gguf(path, tmp_path / "out")
    assert isinstance(err.value, (ModelConfigError, WeightsError))
    assert not (tmp_path / "out").exists()
