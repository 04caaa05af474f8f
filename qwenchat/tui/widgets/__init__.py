"""Reusable widgets; each keeps its own DEFAULT_CSS and reports upward with messages."""
