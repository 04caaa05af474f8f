"""One line at the bottom: model, device/dtype, context used, cache reuse and speed."""

from __future__ import annotations

from textual.widgets import Static


class StatusBar(Static):
    DEFAULT_CSS = """
    StatusBar { height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    """

    def show(self, *, model: str = "", device: str = "", dtype: str = "", window: int | None = None,
             used: int | None = None, cached: int | None = None, ttft: float | None = None,
             tok_s: float | None = None, note: str = "") -> None:
        short = model.rstrip("/").rsplit("/", 1)[-1] if model else ""
        parts = [short or "no model"]
        if device:
            parts.append(f"{device}/{dtype}")
        if window:
            parts.append(f"ctx {used or 0}/{window}")
        if cached is not None:
            parts.append(f"cached {cached}")
        if ttft is not None:
            parts.append(f"TTFT {ttft:.2f}s")
        if tok_s is not None:
            parts.append(f"{tok_s:.1f} tok/s")
        if note:
            parts.append(note)
        self.update(" │ ".join(parts))
