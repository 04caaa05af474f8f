"""System-prompt presets: named texts the user picks for a new conversation."""

from __future__ import annotations

import difflib

from qwenchat.errors import StoreError
from qwenchat.store.db import StoreBase, now
from qwenchat.store.records import Preset, preset_from_row


def _clean_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise StoreError("a preset name cannot be empty", "give the preset a short name")
    return name


class PresetsMixin(StoreBase):
    def save_preset(self, name: str, text: str) -> Preset:
        """Create the preset, or replace the text of the one with this name."""
        name = _clean_name(name)
        if not text.strip():  # it would set no system prompt at all
            raise StoreError(f"preset {name!r} would be empty", "give the system prompt it should hold")
        stamp = now()
        with self._write() as conn:
            conn.execute(
                "INSERT INTO presets (name, text, created_at, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET text = excluded.text,"
                " updated_at = excluded.updated_at",
                (name, text, stamp, stamp),
            )
            row = conn.execute("SELECT * FROM presets WHERE name = ?", (name,)).fetchone()
            return preset_from_row(row)

    def get_preset(self, name: str) -> Preset:
        with self._read() as conn:
            row = conn.execute("SELECT * FROM presets WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise self._no_preset(name)
        return preset_from_row(row)

    def list_presets(self) -> list[Preset]:
        with self._read() as conn:
            return [preset_from_row(r) for r in conn.execute("SELECT * FROM presets ORDER BY name")]

    def rename_preset(self, old: str, new: str) -> Preset:
        new = _clean_name(new)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM presets WHERE name = ?", (old,)).fetchone() is None:
                raise self._no_preset(old)
            if old != new and conn.execute(
                "SELECT 1 FROM presets WHERE name = ?", (new,)
            ).fetchone():
                raise StoreError(
                    f"a preset named {new!r} already exists",
                    f"pick another name, or remove it first: qwenchat preset rm {new}",
                )
            conn.execute(
                "UPDATE presets SET name = ?, updated_at = ? WHERE name = ?", (new, now(), old)
            )
            return preset_from_row(
                conn.execute("SELECT * FROM presets WHERE name = ?", (new,)).fetchone()
            )

    def delete_preset(self, name: str) -> None:
        with self._write() as conn:
            if conn.execute("DELETE FROM presets WHERE name = ?", (name,)).rowcount == 0:
                raise self._no_preset(name)

    def _no_preset(self, name: str) -> StoreError:
        names = [p.name for p in self.list_presets()]
        if not names:
            return StoreError(
                f"no preset named {name!r} (there are no presets yet)",
                "save one with: qwenchat preset save NAME TEXT",
            )
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return StoreError(
            f"no preset named {name!r}", f"{hint}known presets: {', '.join(names)}"
        )
