"""System-prompt presets."""

from __future__ import annotations

import pytest

from qwenchat.errors import StoreError
from qwenchat.store import Store


def test_save_get_list_replace_rename_delete(store: Store) -> None:
    store.save_preset("coder", "You write Python.")
    store.save_preset("pirate", "Talk like a pirate.")
    assert store.get_preset("coder").text == "You write Python."
    store.save_preset("coder", "You write Rust.")  # same name replaces the text
    assert [(p.name, p.text) for p in store.list_presets()] == [
        ("coder", "You write Rust."), ("pirate", "Talk like a pirate.")]
    store.rename_preset("coder", "rustacean")
    assert [p.name for p in store.list_presets()] == ["pirate", "rustacean"]
    with pytest.raises(StoreError) as err:
        store.rename_preset("pirate", "rustacean")
    assert "already exists" in err.value.message
    store.delete_preset("pirate")
    assert [p.name for p in store.list_presets()] == ["rustacean"]


def test_unknown_preset_lists_the_known_ones(store: Store) -> None:
    with pytest.raises(StoreError) as err:
        store.get_preset("coder")
    assert "no presets yet" in err.value.message
    store.save_preset("coder", "x")
    store.save_preset("writer", "y")
    with pytest.raises(StoreError) as err:
        store.get_preset("codr")
    assert err.value.message == "no preset named 'codr'"
    assert "did you mean 'coder'" in err.value.hint and "coder, writer" in err.value.hint
    with pytest.raises(StoreError):
        store.delete_preset("nope")
    with pytest.raises(StoreError):
        store.save_preset("  ", "text")


def test_an_empty_preset_is_refused(store):
    """`preset save empty ""` was accepted (found hands-on): a preset that sets no prompt."""
    with pytest.raises(StoreError) as caught:
        store.save_preset("empty", " \n ")
    assert "would be empty" in caught.value.message and caught.value.hint
    assert [p.name for p in store.list_presets()] == []
