"""Chat-template render limits (issue 12, item 7): a hostile template that loops for hours or
builds huge strings is stopped at the time limit or before the allocation, with a TemplateError
naming the template's file and the limit; normal templates are untouched.

The hostile templates run in one child process with its address space capped, so a limit that
does not hold fails its test (a timeout, a MemoryError) instead of freezing the machine."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from qwenchat.engine import template_limits
from qwenchat.engine.errors import TemplateError
from qwenchat.engine.template import ChatTemplate

TEMPLATES = Path(__file__).resolve().parent.parent / "fixtures" / "templates"
HI = [{"role": "user", "content": "hi"}]

SLOW = {  # stopped by the clock
    "nested-range": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "nested-string-loops": "{% set s = 'x' * 10000 %}{% for a in s %}{% for b in s %}{% for c in s %}"
    "{% endfor %}{% endfor %}{% endfor %}",
}
EITHER = {  # stopped by whichever limit comes first: a quick CPU writes 10M characters within 2 s
    "deep-json": "{% set ns = namespace(x=[1]) %}{% for i in range(60) %}{% set ns.x = [ns.x, ns.x] %}{% endfor %}"
    "{{ ns.x | tojson(indent=4) }}",
}
BIG = {  # stopped by the size limit, before the allocation
    "doubling-concat": "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "doubling-plus": "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "repeat": "{{ ('a' * 1000000) * 1000000 }}",
    "center": "{{ 'x' | center(4000000000) }}",
    "ljust": "{{ 'x'.ljust(4000000000) }}",
    "indent": "{{ ('\\n' * 1000000) | indent(100000) }}",
    "format-filter": "{{ '%4000000000s' | format('x') }}",
    "format-star": "{{ '%*s' | format(4000000000, 'x') }}",
    "percent": "{{ '%.4000000000f' % 1.5 }}",
    "str-format": "{{ '{:>4000000000}'.format('x') }}",
    "str-format-dynamic": "{{ '{:>{}}'.format('x', 4000000000) }}",
    "tojson": "{{ (['x' * 1000000] * 100000) | tojson }}",
    "join-filter": "{{ (['x' * 1000000] * 100000) | join }}",
    "join-method": "{{ ''.join(['x' * 1000000] * 100000) }}",
    "print-container": "{{ ['x' * 1000000] * 100000 }}",
    "bigint-power": "{% set ns = namespace(x=10) %}{% for i in range(5) %}{% set ns.x = ns.x ** 1000 %}{% endfor %}",
    "bigint-product": "{% set ns = namespace(x=3) %}{% for i in range(64) %}{% set ns.x = ns.x * ns.x %}{% endfor %}",
    "output": "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}",
    "buffered-block": "{% set b %}{% for i in range(100000) %}{{ 'x' * 1000000 }}{% endfor %}{% endset %}",
    "replace": "{{ ('x' * 1000000).replace('', 'y' * 1000) }}",
    "split": "{{ (' ' * 9000000).split(' ') | length }}",
    "to-bytes": "{{ (1).to_bytes(4000000000, 'big') | length }}",
    "batch": "{{ [1] | batch(4000000000, 0) | list }}",
    "list-repeat": "{{ ([0] * 100000000) | length }}",
    "slow-filter": "{{ ('word ' * 2000000) | wordwrap(3) }}",
}

CHILD = """
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from qwenchat.engine.errors import TemplateError
from qwenchat.engine.template import ChatTemplate
for name, source in json.loads(sys.stdin.read()).items():
    t0 = time.monotonic()
    try:
        ChatTemplate(source, "/models/evil/chat_template.jinja", {}).render([{"role": "user", "content": "hi"}])
        result = "rendered"
    except TemplateError as e:
        result = e.message + " | " + (e.hint or "")
    except BaseException as e:
        result = f"{type(e).__name__}: {e}"
    print(json.dumps({"name": name, "result": result, "seconds": time.monotonic() - t0}), flush=True)
"""


@pytest.fixture(scope="module")
def hostile_results() -> dict[str, dict]:
    """Each hostile template's outcome in a memory-capped child; a render that hangs leaves
    the ones after it missing."""
    try:
        out = subprocess.run([sys.executable, "-c", CHILD], input=json.dumps({**BIG, **SLOW, **EITHER}), capture_output=True,
                             text=True, timeout=90).stdout
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    return {r["name"]: r for r in map(json.loads, out.splitlines())}


@pytest.mark.parametrize("name", sorted(SLOW))
def test_endless_template_is_stopped_at_the_time_limit(hostile_results, name):
    result = hostile_results.get(name)
    assert result is not None, "the render did not end"
    assert "/models/evil/chat_template.jinja: the chat template was stopped" in result["result"]
    assert f"longer than {template_limits.RENDER_SECONDS:g} s" in result["result"]
    assert result["seconds"] < template_limits.RENDER_SECONDS + 5


@pytest.mark.parametrize("name", sorted(EITHER))
def test_template_growing_fast_and_long_is_stopped_at_a_limit(hostile_results, name):
    result = hostile_results.get(name)
    assert result is not None, "the render did not end"
    assert "/models/evil/chat_template.jinja: the chat template was stopped" in result["result"]
    assert f"longer than {template_limits.RENDER_SECONDS:g} s" in result["result"] or "(limit " in result["result"]
    assert result["seconds"] < template_limits.RENDER_SECONDS + 5


@pytest.mark.parametrize("name", sorted(BIG))
def test_huge_string_is_refused_before_it_is_built(hostile_results, name):
    result = hostile_results.get(name)
    assert result is not None, "the render did not end"
    assert result["result"].startswith("/models/evil/chat_template.jinja: the chat template was stopped"), result
    assert "(limit " in result["result"] and "MemoryError" not in result["result"]
    assert result["seconds"] < 5


def test_limit_grows_with_the_conversation(monkeypatch):
    """The size limit is a floor plus twice the input: a long message renders; a template that
    multiplies it does not."""
    monkeypatch.setattr(template_limits, "BASE_CHARS", 1000)
    qwen = ChatTemplate((TEMPLATES / "qwen2_5.jinja").read_text(), "qwen2_5.jinja", {})
    long = [{"role": "user", "content": "y" * 5000}]
    assert "y" * 5000 in qwen.render(long)
    triple = ChatTemplate("{{ messages[0].content * 3 }}", "triple.jinja", {})
    with pytest.raises(TemplateError, match=r"triple.jinja: .* 15,000 characters long \(limit 11,\d{3}\)"):
        triple.render(long)


def test_small_limit_is_honoured_in_process():
    template = ChatTemplate("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                            "spin.jinja", {}, max_seconds=0.2)
    t0 = time.monotonic()
    with pytest.raises(TemplateError, match=r"spin.jinja: .*longer than 0.2 s"):
        template.render(HI)
    assert time.monotonic() - t0 < 3


def test_render_in_a_worker_thread_ends_and_leaves_the_main_thread_running():
    """The app renders in a worker thread: a hostile template ends there within the limit, and
    the main thread (the UI loop) keeps getting time meanwhile."""
    template = ChatTemplate("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                            "spin.jinja", {}, max_seconds=0.5)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            template.render(HI)
        except TemplateError as e:
            errors.append(e)

    worker = threading.Thread(target=work)
    worker.start()
    gaps, last = [], time.monotonic()
    while worker.is_alive() and time.monotonic() - last < 10:
        time.sleep(0.01)
        now = time.monotonic()
        gaps.append(now - last)
        last = now
    worker.join(timeout=5)
    assert not worker.is_alive() and len(errors) == 1
    assert max(gaps) < 0.5


@pytest.mark.parametrize(
    "source,expected",
    [
        ("{{ 'ab' * 3 }}|{{ [1] * 2 }}|{{ 2 ** 10 }}|{{ 3 * 4 }}|{{ 'x' + 'y' }}|{{ [1] + [2] }}", "ababab|[1, 1]|1024|12|xy|[1, 2]"),
        ("{{ '%5s|%-3d|%.2f' % ('a', 7, 1.234) }}|{{ '%s' | format('z') }}", "    a|7  |1.23|z"),
        ("{{ '{:>4}{}'.format('a', 'b') }}|{{ '{0:{1}}'.format('c', 3) }}|{{ 'x'.center(5) }}|{{ 'x' | center(3) }}",
         "   ab|c  |  x  | x "),
        ("{{ ['a', 'b'] | join(', ') }}|{{ ','.join(['c', 'd']) }}|{{ [1, 2] | join }}|{{ messages | map(attribute='role') | join }}",
         "a, b|c,d|12|user"),
        ("{{ 'a\nb' | indent(2) }}|{{ 'a b' | replace(' ', '_') }}|{{ 'a b c'.split() | length }}|{{ [[1], [2]] | sum(start=[]) }}",
         "a\n  b|a_b|3|[1, 2]"),
        ("{{ {'a': [1, {'b': 2}]} | tojson(indent=2) }}", '{\n  "a": [\n    1,\n    {\n      "b": 2\n    }\n  ]\n}'),
        ("{% for x in messages | reverse %}{{ loop.length }}{{ loop.last }}{% endfor %}{% for c in 'ab' %}{{ c }}{% endfor %}",
         "1Trueab"),
        # lazy filter results (generators) through the length-checked filters
        ("{{ messages | selectattr('role', 'equalto', 'user') | list | length }}|{{ messages | map(attribute='role') | sort "
         "| first }}|{{ messages | map(attribute='content') | reverse | join }}|{{ (messages | last).content[:1] | upper }}",
         "1|user|hi|H"),
    ],
)
def test_guarded_operations_keep_their_results(source, expected):
    assert ChatTemplate(source, "ok.jinja", {}).render(HI) == expected
