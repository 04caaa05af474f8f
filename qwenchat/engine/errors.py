"""Errors the engine raises for problems a user can act on (bad model files, templates,
settings, context overflow). Anything else escaping the engine is a bug."""

from __future__ import annotations


class EngineError(Exception):
    """Something the user can fix: `message` says what is wrong, `hint` how to fix it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ModelConfigError(EngineError):
    """config.json is missing, unreadable, not qwen2, or uses an unsupported feature."""


class WeightsError(EngineError):
    """Weight files are missing, truncated, mis-shaped, or in a refused format (.bin pickles)."""


class TokenizerError(EngineError):
    """tokenizer.json / tokenizer_config.json are missing or invalid."""


class TemplateError(EngineError):
    """The chat template is missing, fails, refuses the conversation or breaks the sandbox."""


class ContextOverflowError(EngineError):
    """A message cannot fit the context window even after dropping older turns."""


class SettingsError(EngineError):
    """A generation setting (temperature, top_p, ...) or device/dtype choice is invalid."""


class ConstraintError(SettingsError):
    """The output constraint (a JSON schema, or the JSON-object mode) cannot be used as given:
    the server names `response_format` for it, not the messages."""


class ModelOutputError(EngineError):
    """The model's scores for the next token are unusable (NaN or infinite): damaged weights,
    or activations that overflow the dtype."""
