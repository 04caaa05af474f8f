"""The seed models: short aliases for the Qwen2/Qwen2.5 repos qwenchat is built for.

Pure data and lookups (stdlib only). Any other Hub repo is reachable by its `owner/name` id;
an alias is just a friendlier name for one of these five (see seed-models.md).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class CatalogEntry:
    alias: str
    repo_id: str
    kind: str  # "instruct" or "base"
    params: str  # "0.5B", "1.5B"
    description: str


DEFAULT_ALIAS = "qwen2.5-0.5b-instruct"

CATALOG: dict[str, CatalogEntry] = {
    e.alias: e
    for e in (
        CatalogEntry("qwen2.5-0.5b-instruct", "Qwen/Qwen2.5-0.5B-Instruct", "instruct", "0.5B",
                     "Qwen2.5 0.5B chat model"),
        CatalogEntry("qwen2-0.5b-instruct", "Qwen/Qwen2-0.5B-Instruct", "instruct", "0.5B",
                     "Qwen2 0.5B chat model"),
        CatalogEntry("qwen2-1.5b-instruct", "Qwen/Qwen2-1.5B-Instruct", "instruct", "1.5B",
                     "Qwen2 1.5B chat model"),
        CatalogEntry("qwen2-0.5b", "Qwen/Qwen2-0.5B", "base", "0.5B", "Qwen2 0.5B base model"),
        CatalogEntry("qwen2-1.5b", "Qwen/Qwen2-1.5B", "base", "1.5B", "Qwen2 1.5B base model"),
    )
}


def lookup(name: str) -> CatalogEntry | None:
    """The catalog entry for an alias (case-insensitive), or None."""
    return CATALOG.get(name.strip().lower())


def alias_for_repo(repo_id: str) -> str | None:
    """The alias of a seed repo id (case-insensitive), or None."""
    wanted = repo_id.lower()
    for entry in CATALOG.values():
        if entry.repo_id.lower() == wanted:
            return entry.alias
    return None


def suggest(name: str, extra: list[str] | None = None, n: int = 3) -> list[str]:
    """Close matches for a mistyped alias, among the aliases and any `extra` names."""
    candidates = list(CATALOG) + list(extra or [])
    return difflib.get_close_matches(name.strip().lower(), candidates, n=n, cutoff=0.6)
