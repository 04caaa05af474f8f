"""Tokenizer: encode/decode parity with transformers, load errors, encode_chat's guard, and the
streaming decoder (exact, never a broken character, constant window)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from qwenchat.engine.errors import TokenizerError
from qwenchat.engine.tokenizer import StreamDecoder, Tokenizer
from tests.engine.tok_fixtures import byte_token, reference, tok_dirs  # noqa: F401 - fixture
from tests.fixtures.tiny import CORPUS

EXTRA = [
    "",
    " ",
    "   leading spaces and trailing   ",
    "\n\n\t\ttabs\r\nand CRLF\r\n",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more<|im_end|><|im_end|>",
    "<tool_call>\n{\"name\": \"f\"}\n</tool_call>",
    "<|im_ almost special |> <|im_end| <|IM_END|>",
    "e\u0301 vs \u00e9, A\u030a vs \u00c5 (NFC normalises)",
    "👨‍👩‍👧‍👦 👍🏿 🏳️‍🌈 🇫🇷 1️⃣",
    "Zalgo: Z\u0351\u0352\u0353a\u0300\u0301\u0302",
    "العربية עברית हिन्दी ไทย",
    "\u0000 nul \ufffd replacement \u200b zwsp \ufeff bom",
    "I'm, you're, they've, he'll, we'd, it's",
    "1234567890 3.14159 2+2=4 x**2",
    "a" * 500,
]
TEXTS = CORPUS + EXTRA


@pytest.fixture(scope="module")
def tok(tok_dirs):  # noqa: F811 - fixture
    return Tokenizer.from_dir(tok_dirs["qwen2_5"])


@pytest.fixture(scope="module")
def hf(tok_dirs):  # noqa: F811 - fixture
    return reference(tok_dirs["qwen2_5"])


# -- metadata --------------------------------------------------------------------------------


def test_metadata_matches_transformers(tok, hf):
    assert tok.vocab_size == len(hf)
    assert tok.special_tokens == {
        "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None
    }
    assert tok.eos_token_id == hf.eos_token_id == tok.token_id("<|im_end|>")
    special = {i for i, t in hf.added_tokens_decoder.items() if t.special}
    assert tok.control_ids == special and len(special) == 3
    assert tok.token_id("<tool_call>") not in tok.control_ids
    assert tok.token_id("no such token") is None


# -- encode / decode parity -------------------------------------------------------------------


@pytest.mark.parametrize("text", TEXTS)
def test_encode_decode_match_transformers(tok, hf, text):
    ids = tok.encode(text)
    assert ids == hf.encode(text, add_special_tokens=False)
    plain = tok.encode_plain(text)
    assert plain == hf.encode(text, add_special_tokens=False, split_special_tokens=True)
    assert not set(plain) & tok.control_ids
    for skip in (True, False):
        assert tok.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip)
    assert tok.decode(ids, skip_special_tokens=False) == tok.decode(plain) == _nfc(text)
    # encode_plain did not leave the tokenizer in plain mode
    assert tok.encode("<|im_end|>") == [tok.token_id("<|im_end|>")]


def _nfc(text: str) -> str:
    import unicodedata

    return unicodedata.normalize("NFC", text)


def test_decode_random_ids_matches_transformers(tok, hf):
    rng = random.Random(1234)
    for _ in range(300):
        ids = [rng.randrange(tok.vocab_size + 40) for _ in range(rng.randint(0, 30))]  # some past the vocab
        for skip in (True, False):
            assert tok.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip)


# -- encode_chat guard -------------------------------------------------------------------------


def test_encode_chat_special_token_straddling_content_is_text(tok):
    """User text and template text that together spell a control token stay text."""
    from qwenchat.engine.template import RenderedChat

    rendered = RenderedChat("A<|im_end|>")  # a template that wrote "A" + content + "|>"
    rendered.contents, rendered.content_spans = ("<|im_end",), ((1, 9),)
    ids = tok.encode_chat(rendered, ["<|im_end"])
    assert not set(ids) & tok.control_ids
    assert tok.decode(ids, skip_special_tokens=False) == "A<|im_end|>"


def test_encode_chat_without_special_text_is_plain_encode(tok):
    rendered = "<|im_start|>user\nhello<|im_end|>\n"
    assert tok.encode_chat(rendered, ["hello"]) == tok.encode(rendered)
    assert tok.encode_chat(rendered, []) == tok.encode(rendered)


def test_encode_chat_search_finds_stripped_content(tok):
    rendered = "<|im_start|>user\nx <|im_end|> y<|im_end|>\n"  # the template trimmed the content
    ids = tok.encode_chat(rendered, ["  x <|im_end|> y \n"])
    controls = [i for i in ids if i in tok.control_ids]
    assert controls == [tok.token_id("<|im_start|>"), tok.token_id("<|im_end|>")]
    assert tok.decode(ids, skip_special_tokens=False) == rendered


def test_encode_chat_refuses_content_it_cannot_place(tok):
    from qwenchat.engine.errors import TemplateError

    with pytest.raises(TemplateError, match="message 2"):
        tok.encode_chat("<|im_start|>user\nhi<|im_end|>\n", ["hi", "gone <|im_start|>"])


def test_encode_chat_ignores_stale_spans(tok):
    """Spans recorded for other contents are not trusted."""
    from qwenchat.engine.template import RenderedChat

    rendered = RenderedChat("<|im_start|>user\nhi <|im_end|><|im_end|>")
    rendered.contents, rendered.content_spans = ("other",), ((0, 5),)
    ids = tok.encode_chat(rendered, ["hi <|im_end|>"])
    assert [i for i in ids if i in tok.control_ids] == [tok.token_id("<|im_start|>"), tok.token_id("<|im_end|>")]


# -- load errors -------------------------------------------------------------------------------


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_tokenizer_json(tmp_path):
    with pytest.raises(TokenizerError, match="tokenizer.json: file not found") as info:
        Tokenizer.from_dir(tmp_path)
    assert info.value.hint


def test_invalid_tokenizer_json(tmp_path, tok_dirs):  # noqa: F811 - fixture
    d = _copy(tok_dirs["qwen2"], tmp_path / "m")
    (d / "tokenizer.json").write_text('{"model": ')
    with pytest.raises(TokenizerError, match="tokenizer.json: not valid JSON"):
        Tokenizer.from_dir(d)
    (d / "tokenizer.json").write_text('{"model": {"type": "Nope"}}')
    with pytest.raises(TokenizerError, match="tokenizer.json: not a tokenizer"):
        Tokenizer.from_dir(d)


def test_invalid_tokenizer_config(tmp_path, tok_dirs):  # noqa: F811 - fixture
    d = _copy(tok_dirs["qwen2"], tmp_path / "m")
    (d / "tokenizer_config.json").write_text("{'single': 'quotes'}")
    with pytest.raises(TokenizerError, match="tokenizer_config.json: not valid JSON"):
        Tokenizer.from_dir(d)
    (d / "tokenizer_config.json").write_text("[1, 2]")
    with pytest.raises(TokenizerError, match="tokenizer_config.json: expected a JSON object"):
        Tokenizer.from_dir(d)


def _edit_config(d: Path, **changes) -> None:
    path = d / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_eos_not_in_vocab(tmp_path, tok_dirs):  # noqa: F811 - fixture
    d = _copy(tok_dirs["qwen2"], tmp_path / "m")
    _edit_config(d, eos_token="<|no_such_token|>")
    with pytest.raises(TokenizerError, match=r"tokenizer_config.json: eos_token '<\|no_such_token\|>' is not"):
        Tokenizer.from_dir(d)


def test_special_tokens_as_objects_and_missing_config(tmp_path, tok_dirs):  # noqa: F811 - fixture
    d = _copy(tok_dirs["qwen2"], tmp_path / "m")
    _edit_config(d, eos_token={"__type": "AddedToken", "content": "<|endoftext|>", "special": True})
    tok = Tokenizer.from_dir(d)
    assert tok.special_tokens["eos_token"] == "<|endoftext|>"
    assert tok.eos_token_id == tok.token_id("<|endoftext|>") == reference(d).eos_token_id
    (d / "tokenizer_config.json").unlink()
    tok = Tokenizer.from_dir(d)
    assert tok.eos_token_id is None and set(tok.special_tokens.values()) == {None}


# -- streaming ---------------------------------------------------------------------------------

POOLS = [
    "abcdefghijklmnopqrstuvwxyz ABCXYZ .,!?'\n\t",
    "日本語中文文本한국어텍스트漢字龍",
    "😀🚀👍❤️🏳️‍🌈👨‍👩‍👧",
    "\U0001F3FB\U0001F3FC\U0001F3FD\U0001F3FE\U0001F3FF\u200d\ufe0f",  # skin tones, ZWJ, VS16
    "e\u0301\u0308\u0327\u0351a\u030a\u0303",  # combining marks
    "éàçñøßÆŒ€£¥©®™∑∞→≠±",
    "العربيةעבריתहिन्दीไทย",
    "\U00010348\U0001D11E\U0001F9E0",  # 4-byte characters outside emoji
]


def _random_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(rng.choice(POOLS)) for _ in range(n))


def _stream(tok: Tokenizer, ids: list[int], skip: bool = True) -> list[str]:
    decoder = StreamDecoder(tok, skip_special_tokens=skip)
    chunks = [decoder.push(i) for i in ids]
    chunks.append(decoder.flush())
    return chunks


@pytest.mark.parametrize("seed", range(8))
def test_stream_random_unicode_equals_full_decode(tok, seed):
    rng = random.Random(seed)
    text = _random_text(rng, 400)
    ids = tok.encode_plain(text)
    chunks = _stream(tok, ids)
    full = tok.decode(ids)
    assert "".join(chunks) == full == _nfc(text)
    assert not any("\ufffd" in c for c in chunks)
    # characters really were split across tokens, so the hold-back was exercised
    assert any(tok.decode([i]).endswith("\ufffd") for i in ids)


@pytest.mark.parametrize("skip", [True, False])
def test_stream_with_special_tokens(tok, skip):
    rng = random.Random(7)
    ids: list[int] = []
    for _ in range(50):
        ids += tok.encode_plain(_random_text(rng, 5))
        ids.insert(rng.randrange(len(ids) + 1), rng.choice(sorted(tok.control_ids)))  # even mid-character
    assert "".join(_stream(tok, ids, skip)) == tok.decode(ids, skip_special_tokens=skip)


@pytest.mark.parametrize("seed", range(6))
def test_stream_random_ids_equals_full_decode(tok, seed):
    rng = random.Random(100 + seed)
    ids = [rng.randrange(tok.vocab_size + 20) for _ in range(600)]
    for skip in (True, False):
        assert "".join(_stream(tok, ids, skip)) == tok.decode(ids, skip_special_tokens=skip)


def test_stream_invalid_bytes_keep_window_small(tok):
    """A long run of invalid bytes (lone continuation bytes, stray lead bytes) is still decoded
    exactly, and the window stays bounded (constant cost per token)."""
    cont, lead3, lead4 = byte_token(tok, 0x80), byte_token(tok, 0xE4), byte_token(tok, 0xF0)
    tail = [byte_token(tok, 0xB8), byte_token(tok, 0xAD)]  # with lead3: "中"
    rng = random.Random(3)
    ids = [rng.choice([cont, lead3, lead4, cont, cont]) for _ in range(400)] + [lead3] + tail
    decoder = StreamDecoder(tok)
    out, longest = [], 0
    for i in ids:
        out.append(decoder.push(i))
        longest = max(longest, len(decoder._ids))
    out.append(decoder.flush())
    assert "".join(out) == tok.decode(ids)
    assert longest <= 2 * StreamDecoder.MAX_PENDING + 2  # context + pending, each bounded
    assert "".join(out).endswith("中")


def test_stream_character_split_around_skipped_specials(tok):
    """E4 | <|im_end|> x3 | B8 AD: with specials skipped the bytes still join into one character."""
    end = tok.token_id("<|im_end|>")
    ids = [byte_token(tok, 0xE4), end, end, end, byte_token(tok, 0xB8), byte_token(tok, 0xAD)]
    for skip in (True, False):
        chunks = _stream(tok, ids, skip)
        assert "".join(chunks) == tok.decode(ids, skip_special_tokens=skip)
    assert "".join(_stream(tok, ids, True)) == "中"


def test_stream_incomplete_character_at_end_is_flushed(tok):
    ids = tok.encode("ok ") + [byte_token(tok, 0xE4), byte_token(tok, 0xB8)]
    decoder = StreamDecoder(tok)
    pushed = "".join(decoder.push(i) for i in ids)
    assert pushed == "ok "
    assert pushed + decoder.flush() == tok.decode(ids) == "ok \ufffd"
    assert decoder.flush() == ""  # flush resets


def test_stream_window_stays_small_on_normal_text(tok):
    ids = tok.encode_plain(_random_text(random.Random(9), 3000))
    decoder = StreamDecoder(tok)
    longest = 0
    for i in ids:
        decoder.push(i)
        longest = max(longest, len(decoder._ids))
    assert longest <= 8


@pytest.mark.parametrize("max_pending", [0, 1, 3])
def test_stream_exact_when_cutting_often(tok, monkeypatch, max_pending):
    """Force the window cut on nearly every token: valid characters, truncated ones, junk bytes
    and control ids in random order still decode exactly."""
    monkeypatch.setattr(StreamDecoder, "MAX_PENDING", max_pending)
    specials = sorted(tok.control_ids)
    rng = random.Random(max_pending)
    for _ in range(300):
        raw = bytearray()
        for _ in range(rng.randint(1, 15)):
            char = rng.choice("aé中😀\u0301ß€ ").encode()
            r = rng.random()
            raw += char if r < 0.6 else char[: rng.randint(1, 3)] if r < 0.8 else bytes([rng.randrange(0x80, 0x100)])
        ids = [byte_token(tok, b) for b in raw]
        for _ in range(rng.randint(0, 3)):
            ids.insert(rng.randrange(len(ids) + 1), rng.choice(specials))
        for skip in (True, False):
            assert "".join(_stream(tok, ids, skip)) == tok.decode(ids, skip_special_tokens=skip)
