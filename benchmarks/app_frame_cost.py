"""What drawing a streaming reply costs the chat app's UI thread (issue 15, item 2): CPU time per
update of the reply, with the engine replaced by a scripted one (tests/fake_engine.py) streaming a
Markdown reply at a fixed rate, so only the app's own work is measured and no model is needed.

    .venv/bin/python benchmarks/app_frame_cost.py [--rate 30] [--size 120x40] [--long-code] [--json]

`--long-code`: the reply is one 150-line Python block (the dearest update: the block is drawn
again as it grows).

The real app (QwenchatApp over the real ChatSession) runs headless under Textual's Pilot, so it
lays out and renders every frame but writes nothing to a terminal. Variants, one process each:
- markdown: what the app does (the reply's `ReplyView`, tui/widgets/reply.py, grows by `append`);
- plain: the reply as plain text growing in one Static, laid out again at every update (for
  comparison: Textual's plainest growing widget);
- none: nothing drawn but the status bar (the app's fixed cost per update).
On 2 cores every millisecond of it is taken from a decode step (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = ("markdown", "plain", "none")
REPLY = """Here is a Python function that reads a CSV file and returns the rows as dictionaries.

```python
import csv
from pathlib import Path


def read_rows(path: Path) -> list[dict[str, str]]:
    \"\"\"Read every row of a CSV file.\"\"\"
    with path.open(newline="") as f:
        return [dict(row) for row in csv.DictReader(f)]
```

How it works:

1. `csv.DictReader` uses the first line as the field names.
2. Each row becomes a dictionary keyed by those names.
3. The file is opened with `newline=""` as the **csv** module asks.

You can call it like this:

```python
rows = read_rows(Path("data.csv"))
print(len(rows), "rows")
```

If the file is large, consider a generator instead so that rows are read one at a time.
"""

LONG_CODE = "Here:\n\n```python\n" + "".join(f"def f{i}(x):\n    return x * {i}  # comment {i}\n\n"
                                            for i in range(50)) + "```\n"


def _draw_instead(variant: str) -> None:
    """Replace how the reply's view grows (markdown: leave the app as it is)."""
    from textual.widgets import Static

    from qwenchat.tui.widgets import chatlog

    async def plain(self, text: str) -> None:
        self.text += text
        line = self.query_one(".details", Static)  # a plain Static under the reply
        line.update(self.text)
        line.display = True

    async def none(self, text: str) -> None:
        self.text += text

    if variant != "markdown":
        chatlog.MessageView.append = {"plain": plain, "none": none}[variant]


async def _worker(variant: str, rate: float, size: tuple[int, int], reply: str = REPLY) -> dict[str, Any]:
    from qwenchat.session import ChatSession
    from qwenchat.tui.app import QwenchatApp
    from tests.fake_engine import FakeEngine

    _draw_instead(variant)
    engine = FakeEngine(default=reply, delay=1 / rate, max_new_tokens=100_000)
    app = QwenchatApp(lambda _model, store, _progress: ChatSession(engine, store, model_label="scripted"),
                      model="scripted", theme="qwenchat-dark", persist_theme=False)  # fmt: skip
    async with app.run_test(size=size) as pilot:
        while app.session is None:
            await pilot.pause(0.05)
        app.chat.input.text = "Write a function"
        await pilot.press("enter")
        wall, cpu = time.monotonic(), time.thread_time()  # this thread is the app's UI thread
        while app.chat.generating:
            await asyncio.sleep(0.05)
        wall, cpu = time.monotonic() - wall, time.thread_time() - cpu
        updates = app.chat.buffer.updates
    return {"variant": variant, "wall_s": wall, "ui_cpu_s": cpu, "updates": updates,
            "ms_per_update": 1000 * cpu / max(updates, 1), "core_share": cpu / wall}  # fmt: skip


def run(variant: str, rate: float, size: str, long_code: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as home:
        cmd = [sys.executable, __file__, "--worker", variant, "--rate", str(rate), "--size", size,
               *(["--long-code"] if long_code else [])]
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "QWENCHAT_HOME": home},
                              cwd=ROOT, stdin=subprocess.DEVNULL, timeout=600)  # fmt: skip
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the {variant} run failed: {done.stderr.strip()[-400:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=30.0, help="words a second the scripted engine streams")
    p.add_argument("--size", default="120x40", help="terminal size, COLUMNSxLINES")
    p.add_argument("--long-code", action="store_true", help="a reply of one 150-line code block")
    p.add_argument("--json", action="store_true")
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        size = tuple(int(n) for n in args.size.split("x"))
        reply = LONG_CODE if args.long_code else REPLY
        print("RESULT " + json.dumps(asyncio.run(_worker(args.worker, args.rate, size, reply))))  # type: ignore[arg-type]
        return 0
    rows = [run(v, args.rate, args.size, args.long_code) for v in VARIANTS]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"UI thread per update of a reply streamed at {args.rate:g} words/s, {args.size}, headless\n")
    print("| reply drawn as | updates | CPU per update | share of a core |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['updates']} | {r['ms_per_update']:.1f} ms | {100 * r['core_share']:.0f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
