"""The jinja environment chat templates render in: transformers' (immutable sandbox, trim_blocks,
lstrip_blocks, loopcontrols, its `tojson`, `raise_exception`, `strftime_now`, `dict`,
`namespace`), so output stays byte-identical, plus the render limits of `template_limits`:

- every `{% for %}` iterates through a `Guarded` iterable, and every call (macros included),
  operator, filter and output piece ticks the current `Budget`, so a render ends at its
  deadline (without loops or calls a template is straight-line code, as short as its source);
- operations that can make a result much larger than their inputs (`*`, `**`, `%`, `+`,
  `~`, padding, `indent`, formats, `join`, `replace`, `split`, `tojson`, printing a container)
  check the size first; the template's output and every block it buffers are size-checked.

Nothing here knows about messages or tokens; `template.py` sets the budget per render.
"""

from __future__ import annotations

import functools
import json
import types
from datetime import datetime
from typing import Any, ClassVar

import jinja2
import jinja2.ext
import jinja2.nodes as nodes
from jinja2.defaults import DEFAULT_NAMESPACE
from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import _PassArg
from jinja2.visitor import NodeTransformer

from qwenchat.engine import template_limits as limits

_GUARD_ITER, _GUARD_TEXT, _GUARD_RESULT = "_qc_guard_iter", "_qc_guard_text", "_qc_guard_result"


class RaisedByTemplate(Exception):
    """raise_exception() was called: the template refuses the conversation."""


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` (transformers' assistant-mask tag) renders its body."""

    tags: ClassVar[set[str]] = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


class _Guard(NodeTransformer):
    """Rewrites the parsed template: loops iterate guarded, `~` operands are size-checked."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        node = self.generic_visit(node)
        node.iter = _filter(node.iter, _GUARD_ITER)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        node = self.generic_visit(node)
        node.nodes = [_filter(n, _GUARD_TEXT) for n in node.nodes]
        return _filter(node, _GUARD_RESULT)


def _filter(node: nodes.Expr, name: str) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


class Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with the render limits wired into its hooks."""

    intercepted_binops = frozenset(["*", "**", "+", "%"])

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        return _Guard().visit(super()._parse(source, name, filename))

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        # jinja returns an Undefined that only fails when used, so `{{ f.__globals__ }}` would
        # quietly print "". A template that reaches for internals is hostile: stop it at once.
        raise SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__!r} object is unsafe")

    def call(self, context: jinja2.runtime.Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = limits.current()
        budget.tick()
        target = getattr(obj, "__wrapped__", obj)  # str.format comes wrapped by the sandbox
        owner = getattr(target, "__self__", None)
        if isinstance(target, types.BuiltinMethodType) and isinstance(owner, (str, bytes, int)):
            name = target.__name__
            if name in ("format", "format_map"):
                values = [*args, *kwargs.values()]
                if name == "format_map" and args and isinstance(args[0], dict):
                    values = list(args[0].values())
                limits.check_format(owner, values, budget, percent=False)  # type: ignore[arg-type]
            else:
                _check_method(budget, owner, name, args, kwargs)
                if name == "join" and isinstance(owner, str) and len(args) == 1 and not kwargs:
                    if not self.is_safe_callable(obj):
                        raise SecurityError(f"{obj!r} is not safely callable")
                    return limits.checked_join(owner, args[0], budget, convert=False)
        return budget.result(super().call(context, obj, *args, **kwargs), "a call's result")

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        budget = limits.current()
        budget.tick()
        if operator == "+" and type(left) is str and type(right) is str:  # the common case, kept fast
            budget.chars(len(left) + len(right), "a joined string")
            return left + right
        _check_binop(budget, operator, left, right)
        return budget.result(super().call_binop(context, operator, left, right), f"the result of {operator!r}")

    def concat(self, pieces: Any) -> str:  # environment.concat: the output and buffered blocks
        budget, parts, total = limits.current(), [], 0
        for piece in pieces:
            budget.tick()
            total += len(piece)
            budget.chars(total, "the rendered text")
            parts.append(piece)
        return "".join(parts)


def _check_method(budget: limits.Budget, owner: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Methods of str, bytes and int whose result can dwarf their inputs."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool):
            budget.chars(abs(value), f"the result of .{name}()")  # widths, lengths (to_bytes)
    if not isinstance(owner, str):
        return
    arg = (lambda i, key, default=None: args[i] if len(args) > i else kwargs.get(key, default))
    if name == "expandtabs" and isinstance(arg(0, "tabsize", 8), int):
        budget.chars(len(owner) + owner.count("\t") * max(arg(0, "tabsize", 8), 0), "the result of .expandtabs()")
    elif name == "replace" and isinstance(arg(0, "old"), str) and isinstance(arg(1, "new"), str):
        count = arg(2, "count", -1)
        count = count if isinstance(count, int) else -1
        budget.chars(limits.replaced_size(owner, arg(0, "old"), arg(1, "new"), count), "the result of .replace()")
    elif name in ("split", "rsplit", "splitlines"):
        sep = arg(0, "sep") if name != "splitlines" else None
        budget.items(limits.pieces_bound(owner, sep if isinstance(sep, str) else None), f"the result of .{name}()")


def _check_binop(budget: limits.Budget, operator: str, left: Any, right: Any) -> None:
    ints = isinstance(left, int) and isinstance(right, int)
    if operator == "**" and ints:
        if abs(right) > 1000:
            raise SecurityError("exponent too large")
        budget.int_bits(left.bit_length() * abs(right))
    elif operator == "*":
        if ints:
            budget.int_bits(left.bit_length() + right.bit_length())
        for seq, count in ((left, right), (right, left)):
            if isinstance(seq, (str, bytes, list, tuple)) and isinstance(count, int):
                size = len(seq) * count
                budget.items(size, "a repeated list") if isinstance(seq, (list, tuple)) else budget.chars(
                    size, "a repeated string")
    elif operator == "+":
        if isinstance(left, (str, bytes)) and isinstance(right, (str, bytes)):
            budget.chars(len(left) + len(right), "a joined string")
        elif isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
            budget.items(len(left) + len(right), "a joined list")
    elif operator == "%" and isinstance(left, str):
        values = right.values() if isinstance(right, dict) else right if isinstance(right, tuple) else (right,)
        limits.check_format(left, values, budget, percent=True)


# -- filters -------------------------------------------------------------------------------------

# Filters that turn their first argument into text: printing a huge container is refused first.
_STRINGIFY = {"capitalize", "center", "e", "escape", "forceescape", "format", "indent", "lower", "pprint",
              "replace", "safe", "string", "striptags", "title", "trim", "truncate", "upper", "urlencode",
              "urlize", "wordcount", "wordwrap"}
# Filters that make a list as long as their input (a string counts its characters).
_LISTING = {"list", "sort", "unique", "dictsort", "reverse"}
# Filters that loop in Python over their whole input, out of the clock's reach: inputs are kept
# to what finishes well within the time limit.
_SLOW = {"wordwrap", "urlize", "pprint"}
SLOW_FILTER_CHARS = 1_000_000


def _precheck_filter(budget: limits.Budget, name: str, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    arg = (lambda i, key, default=None: args[i] if len(args) > i else kwargs.get(key, default))
    if name in _STRINGIFY:
        budget.text_of(value, f"the input of the {name} filter")
    if name in _SLOW:
        size = len(value) if isinstance(value, str) else limits.text_size(value, SLOW_FILTER_CHARS, budget)
        if size > SLOW_FILTER_CHARS:
            raise limits.LimitExceeded(
                f"the {name} filter was given {size:,} characters (limit {SLOW_FILTER_CHARS:,} for this filter)")
    if name in _LISTING:
        try:
            budget.items(len(value), f"the result of the {name} filter")
        except TypeError:
            pass  # a lazy sequence: its items tick the budget as they come
    text = value if isinstance(value, str) else ""
    if name == "center" and isinstance(arg(0, "width", 80), int):
        budget.chars(arg(0, "width", 80), "the result of the center filter")
    elif name == "indent":
        width = arg(0, "width", 4)
        width = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        budget.chars(len(text) + width * (text.count("\n") + 2), "the result of the indent filter")
    elif name == "format":
        limits.check_format(str(value), [*args, *kwargs.values()], budget, percent=True)
    elif name == "replace" and isinstance(arg(0, "old"), str) and isinstance(arg(1, "new"), str):
        count = arg(2, "count")
        budget.chars(limits.replaced_size(text, arg(0, "old"), arg(1, "new"), count if isinstance(count, int) else None),
                     "the result of the replace filter")
    elif name == "wordwrap":
        wrap = arg(3, "wrapstring") or "\n"
        width = arg(0, "width", 79)
        lines = 2 * len(text) // max(width if isinstance(width, int) else 1, 1) + text.count("\n") + 1
        budget.chars(len(text) + lines * len(str(wrap)), "the result of the wordwrap filter")
    elif name in ("batch", "slice") and isinstance(args[0] if args else None, int):
        budget.items(args[0], f"the result of the {name} filter")


def _guard_filter(name: str, func: Any) -> Any:
    passes = _PassArg.from_obj(func) is not None  # context/environment come first

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        budget = limits.current()
        budget.tick()
        value, rest = (args[1], args[2:]) if passes else (args[0], args[1:])
        _precheck_filter(budget, name, value, rest, kwargs)
        return budget.result(func(*args, **kwargs), f"the result of the {name} filter")

    return run


@jinja2.pass_environment
def _join(env: jinja2.Environment, value: Any, d: str = "", attribute: str | int | None = None) -> str:
    # jinja's join without autoescape (transformers' environment has none), length-checked.
    if attribute is not None:
        value = map(make_attrgetter(env, attribute), value)
    return limits.checked_join(str(d), value, limits.current(), convert=True)


@jinja2.pass_environment
def _sum(env: jinja2.Environment, iterable: Any, attribute: str | int | None = None, start: Any = 0) -> Any:
    if attribute is not None:
        iterable = map(make_attrgetter(env, attribute), iterable)
    budget = limits.current()
    if not isinstance(start, (list, tuple)):
        return sum(limits.Guarded(iterable, budget), start)  # numbers; a str start fails as before
    total = start
    for item in iterable:
        budget.tick()
        if isinstance(item, (list, tuple)):
            budget.items(len(total) + len(item), "the result of the sum filter")
        total = total + item
    return total


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | str | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    # transformers' filter: plain json.dumps, not jinja's HTML-escaping one.
    budget = limits.current()
    budget.text_of(x, "the JSON text")
    if indent is None:
        return json.dumps(x, ensure_ascii=ensure_ascii, separators=separators, sort_keys=sort_keys)
    # Indentation grows with depth: build it piece by piece (what json.dumps does with an
    # indent) and stop once it is too long.
    encoder = json.JSONEncoder(ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    return limits.checked_join("", encoder.iterencode(x), budget, convert=False)


@jinja2.pass_context
def _guard_iter(context: jinja2.runtime.Context, value: Any) -> Any:
    return limits.Guarded(value, limits.current())


@jinja2.pass_context
def _guard_text(context: jinja2.runtime.Context, value: Any) -> Any:
    limits.current().text_of(value, "a joined value")
    return value


@jinja2.pass_context
def _guard_result(context: jinja2.runtime.Context, value: Any) -> Any:
    return limits.current().result(value, "a joined string")


@jinja2.pass_environment
def _finalize(env: jinja2.Environment, value: Any) -> Any:
    # Runs on every `{{ ... }}` before str(): a container's text is size-checked first.
    budget = limits.current()
    if isinstance(value, str):
        budget.count_printed(len(value))
    else:
        budget.text_of(value, "a printed value")
    return value


# -- transformers' globals ------------------------------------------------------------------------


def _raise_exception(message: str) -> None:
    raise RaisedByTemplate(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002 - jinja's names
    budget = limits.current()
    budget.chars(n * max * 8, "the lorem ipsum text")  # words are under 8 characters with spaces
    return DEFAULT_NAMESPACE["lipsum"](n, html, min, max)


class _TemplateDict:
    """`dict(...)` without exposing the dict type itself (as transformers does)."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """`namespace(...)` that refuses underscore names, so no dunder can be stored (as transformers)."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # jinja's trick: `self` may be a key
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise SecurityError(f"namespace attribute {name!r} starts with an underscore")


def environment() -> Sandbox:
    env = Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols],
                  finalize=_finalize)
    env.filters["tojson"] = _tojson
    env.filters["join"] = _join
    env.filters["sum"] = _sum
    env.filters = {name: _guard_filter(name, f) for name, f in env.filters.items()}
    env.filters.update({_GUARD_ITER: _guard_iter, _GUARD_TEXT: _guard_text, _GUARD_RESULT: _guard_result})
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    env.globals["lipsum"] = _lipsum
    return env
