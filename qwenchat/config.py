"""User settings: one `Settings` dataclass, layered config file < environment < command line.

The file is TOML at `qwenchat.paths.config_file()`, flat keys only (read with tomllib, written
by the small writer here, so no new dependency). Every field of `Settings` is None when unset,
so callers can layer: `load_settings()` gives file + environment, `.merged(flags)` puts command
line flags on top, and `.with_defaults(generation_config)` fills what is still unset from the
model's generation_config.json (the lowest layer). Invalid values and unknown keys raise
`ConfigError` naming the key, the value and what is allowed. No torch, no model knowledge.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from qwenchat.engine.records import MIN_CONTEXT, OPTION_RANGES, QUANTIZE_MODES  # torch-free: the options' one declaration
from qwenchat.errors import ConfigError, ValueRefused

DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
DTYPES = ("auto", "float32", "bfloat16", "float16")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class Settings:
    model: str | None = None
    device: str | None = None
    dtype: str | None = None
    quantize: str | None = None
    context_limit: int | None = None
    max_input: int | None = None
    kv_budget: int | None = None  # bytes of recent conversations' KV caches kept for reuse
    theme: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    # a remote server's key (flag > this > QWENCHAT_API_KEY > OPENAI_API_KEY, see qwenchat.remote);
    # kept out of repr so that no log or traceback shows it
    api_key: str | None = field(default=None, repr=False)
    request_timeout: float | None = None  # seconds a remote server may take to the first token

    def merged(self, flags: Mapping[str, Any]) -> Settings:
        """These settings with every flag that is not None on top (validated; unknown keys
        raise ConfigError)."""
        changes = {}
        for key, value in flags.items():
            if value is None:
                continue
            changes[check_key(key, "command line")] = parse_value(key, value, source="command line")
        return replace(self, **changes)

    def with_defaults(self, generation_config: Mapping[str, Any]) -> Settings:
        """Fill unset sampling fields from a model's generation_config.json (lowest layer).
        Values there that are out of range are ignored, not fatal: the file is not the user's."""
        names = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
                 "min_p": "min_p", "repetition_penalty": "repetition_penalty",
                 "max_new_tokens": "max_tokens", "seed": "seed"}
        changes = {}
        for upstream, key in names.items():
            if getattr(self, key) is None and generation_config.get(upstream) is not None:
                try:
                    changes[key] = parse_value(key, generation_config[upstream], source="model")
                except ConfigError:
                    pass
        return replace(self, **changes)

    def as_dict(self, *, include_unset: bool = False) -> dict[str, Any]:
        d = asdict(self)
        return d if include_unset else {k: v for k, v in d.items() if v is not None}


KEYS: tuple[str, ...] = tuple(f.name for f in fields(Settings))
ENV_VARS: dict[str, str] = {
    "model": "QWENCHAT_MODEL",
    "device": "QWENCHAT_DEVICE",
    "dtype": "QWENCHAT_DTYPE",
    "quantize": "QWENCHAT_QUANTIZE",
    "context_limit": "QWENCHAT_CONTEXT_LIMIT",
    "theme": "QWENCHAT_THEME",
}


# --- validation: each parser takes a str (env, flags, `config set`) or a TOML value -----------


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return int(str(value).strip())


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError
    out = float(value) if isinstance(value, (int, float)) else float(str(value).strip())
    if not math.isfinite(out):
        raise ValueError
    return out


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError
    return value.strip()


def _device(value: Any) -> str:
    text = _text(value).lower()
    if not _DEVICE.match(text):
        raise ValueError
    return text


def _dtype(value: Any) -> str:
    text = _text(value).lower()
    text = DTYPE_ALIASES.get(text, text)
    if text not in DTYPES:
        raise ValueError
    return text


QUANTIZE_HELP = (f"Weights: {', '.join(QUANTIZE_MODES)}. auto: int8 on CPUs for 100M+ parameter models, else "
                 "full precision; int8 and int4 are weight-only, lossy, smaller and faster on CPUs (int4 the most).")


def _quantize(value: Any) -> str:
    text = _text(value).lower()
    if text not in QUANTIZE_MODES:
        raise ValueError
    return text


def _size(value: Any) -> int:
    """Bytes: a whole number, or one with a K, M or G suffix (binary: 1K = 1024)."""
    if isinstance(value, str) and value.strip()[-1:].upper() in _SIZE_UNITS:
        text = value.strip()
        return _int(text[:-1]) * _SIZE_UNITS[text[-1].upper()]
    return _int(value)


_SIZE_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _check(parse: Callable[[Any], Any], ok: Callable[[Any], bool]) -> Callable[[Any], Any]:
    def run(value: Any) -> Any:
        out = parse(value)
        if not ok(out):
            raise ValueError
        return out

    return run


# config key -> generation option, where the names differ
OPTION_NAMES = {"max_tokens": "max_new_tokens"}
GENERATION_KEYS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "max_tokens", "seed")


def _ranged(key: str) -> tuple[Callable[[Any], Any], str]:
    """The check of a generation option, from its one declaration (engine.records)."""
    allowed = OPTION_RANGES[OPTION_NAMES.get(key, key)]
    return _check(_int if allowed.integer else _float, lambda v: v in allowed), allowed.describe()


# key -> (parser, what is allowed)
_RULES: dict[str, tuple[Callable[[Any], Any], str]] = {
    "model": (_text, "a model name or path (non-empty text)"),
    "device": (_device, "auto, cpu, cuda, cuda:N or mps"),
    "dtype": (_dtype, "auto, float32, bfloat16, float16 (or fp32, bf16, fp16)"),
    "quantize": (_quantize, f"one of {', '.join(QUANTIZE_MODES)} (int8/int4: weight-only, lossy, smaller and faster on CPUs)"),
    "context_limit": (_check(_int, lambda v: v >= MIN_CONTEXT), f"a whole number of tokens, at least {MIN_CONTEXT}"),
    "max_input": (_check(_size, lambda v: v > 0), "a number of bytes greater than 0 (K, M, G suffixes allowed)"),
    "kv_budget": (_check(_size, lambda v: v >= 0),
                  "a number of bytes, 0 or more, e.g. 512M or 2G (0: keep only the current conversation's cache)"),
    "theme": (_text, "a theme name (non-empty text)"),
    **{key: _ranged(key) for key in GENERATION_KEYS},
    "api_key": (_text, "a remote server's API key (non-empty text)"),
    "request_timeout": (_check(_float, lambda v: v > 0), "a number of seconds greater than 0"),
}
assert set(_RULES) == set(KEYS)


def check_key(key: str, source: str = "value") -> str:
    """`key` if it is a setting; otherwise ConfigError suggesting the closest one."""
    if key in _RULES:
        return key
    close = difflib.get_close_matches(key, KEYS, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ValueRefused(f"unknown setting {key!r} ({source})", f"{hint}known keys: {', '.join(KEYS)}")


def parse_value(key: str, value: Any, *, source: str = "value", name: str | None = None) -> Any:
    """Validate and normalise one value; ConfigError names the key (or `name`, as a form labels
    it), the value, what is allowed."""
    parse, allowed = _RULES[check_key(key, source)]
    try:
        return parse(value)
    except (TypeError, ValueError):
        said = name or key
        raise ValueRefused(
            f"invalid value {value!r} for {said} ({source})", f"{said} must be {allowed}"
        ) from None


# --- reading ----------------------------------------------------------------------------------


def _default_path(path: str | Path | None) -> Path:
    if path is not None:
        return Path(path).expanduser()
    from qwenchat.paths import config_file

    return config_file()


def read_file(path: str | Path | None = None) -> dict[str, Any]:
    """The validated, normalised values in the config file ({} when it does not exist)."""
    p = _default_path(path)
    source = f"in {p}"
    out = {}
    for key, value in read_raw(p).items():
        try:
            out[check_key(key, source)] = parse_value(key, value, source=source)
        except ConfigError as e:
            raise ConfigError(e.message, f"{e.hint}; {repair_hint(key)}") from None
    return out


def repair_hint(key: str) -> str:
    """How to mend `key` in the config file from the shell (config set/unset rewrite a bad file)."""
    if key in _RULES:
        return f"fix it with `qwenchat config set {key} VALUE` or `qwenchat config unset {key}`"
    return f"remove it with `qwenchat config unset {key}`"


def read_raw(path: str | Path | None = None) -> dict[str, Any]:
    """The config file's values as written, unchecked: what `config set` / `unset` rewrite, so a
    bad value can be repaired with them ({} when there is no file)."""
    p = _default_path(path)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):  # no file (or no folder for one): defaults
        return {}
    except OSError as e:
        raise ConfigError(f"cannot read the config file {p}: {e.strerror or e}",
                          "check its permissions") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"the config file {p} is not valid TOML: {e}",
                          f"fix the line it names, or remove {p} to start over") from e


def read_env(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if env is None else env
    out = {}
    for key, var in ENV_VARS.items():
        value = env.get(var)
        if value is not None and value != "":
            out[key] = parse_value(key, value, source=f"environment variable {var}")
    return out


def load_settings(env: Mapping[str, str] | None = None, path: str | Path | None = None) -> Settings:
    """Config file, then environment variables on top. Add flags with `.merged(flags)`."""
    return Settings(**(read_file(path) | read_env(env)))


def sources(env: Mapping[str, str] | None = None, path: str | Path | None = None
            ) -> dict[str, tuple[Any, str]]:
    """Each set key's effective value and where it comes from ("file" or the env var name)."""
    out: dict[str, tuple[Any, str]] = {k: (v, "file") for k, v in read_file(path).items()}
    for key, value in read_env(env).items():
        out[key] = (value, ENV_VARS[key])
    return out


# --- showing ----------------------------------------------------------------------------------

SECRET_KEYS = frozenset({"api_key"})  # never shown in full, and the file holding one is private


def shown(key: str, value: Any) -> Any:
    """`value` as `qwenchat config` may print it: a secret masked to its last 4 characters (enough
    to tell two keys apart), or wholly when it is too short to give any away."""
    if key not in SECRET_KEYS:
        return value
    text = str(value)
    return f"****{text[-4:]}" if len(text) >= 12 else "****"


# --- writing ----------------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    for ch, esc in (("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"), ("\b", "\\b"), ("\f", "\\f")):
        escaped = escaped.replace(ch, esc)
    escaped = "".join(c if ord(c) >= 0x20 and c != "\x7f" else f"\\u{ord(c):04x}" for c in escaped)
    return f'"{escaped}"'


def dumps_toml(values: Mapping[str, Any]) -> str:
    """The file's text: the known keys in their order, then any others the file had (kept as
    written until the user removes them; a table or list there cannot be rewritten: ConfigError)."""
    lines = ["# qwenchat settings (`qwenchat config set KEY VALUE` rewrites this file)"]
    lines += [f"{k} = {toml_value(values[k])}" for k in KEYS if values.get(k) is not None]
    for key, value in values.items():
        if key in KEYS:
            continue
        if isinstance(value, (dict, list)):
            raise ConfigError(f"the config file has {key!r}, a {type(value).__name__} qwenchat cannot rewrite",
                              f"remove {key!r} from the file by hand (it is not a qwenchat setting)")
        lines.append(f"{toml_value(key) if not re.fullmatch(r'[A-Za-z0-9_-]+', key) else key} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def _write(values: Mapping[str, Any], p: Path) -> None:
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(dumps_toml(values), encoding="utf-8")
        if SECRET_KEYS & values.keys():  # a key: readable by its owner only
            tmp.chmod(0o600)
        os.replace(tmp, p)
    except OSError as e:
        raise ConfigError(f"cannot write the config file {p}: {e.strerror or e}",
                          f"make {p.parent} writable, or set QWENCHAT_HOME") from e


def set_value(key: str, value: Any, path: str | Path | None = None) -> Any:
    """Validate `value`, store it under `key` in the config file, and return the stored value."""
    parsed = parse_value(key, value, source="config set")
    p = _default_path(path)
    _write(read_raw(p) | {key: parsed}, p)
    return parsed


def unset_value(key: str, path: str | Path | None = None) -> bool:
    """Remove `key` from the config file; False when it was not set. A key qwenchat does not know
    is removed too when the file has it (a typo there stops every start)."""
    p = _default_path(path)
    values = read_raw(p)
    if key not in values:
        check_key(key, "config unset")
        return False
    del values[key]
    _write(values, p)
    return True
