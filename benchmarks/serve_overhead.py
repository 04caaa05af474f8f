"""What the HTTP path of `qwenchat serve` costs: time to first token and decode tok/s of the same
workload through the server's streaming API and in process, measured in the same run.

    .venv/bin/python benchmarks/serve_overhead.py [--model DIR] [--repeats 5] [--tokens 128]
                                                  [--device auto] [--quantize auto] [--every-token] [--json]

Paths (rows), each a `Path` with a `measure(messages) -> Sample`:
- `in process`: the engine loaded here through the start-up path `serve` uses (startup.load_engine),
  `ChatEngine.chat` iterated directly;
- `server (openai, stream)`: `qwenchat serve` in a subprocess, the official `openai` client
  streaming from it (`stream_options.include_usage`); with `--every-token`, the same through a
  second server sending one event per token (`--stream-interval 0`) instead of 0.1 s batches;
- `qwenchat ask -m URL`: `ask` in a subprocess against that server (the remote models of issue 14);
  its own `--json` timings. Left out, with the reason printed, when this qwenchat's `ask` cannot
  talk to a server yet.

The workload is bench.py's decode workload: its short chat prompt, greedy, `--tokens` new tokens
forced (end-of-sequence switched off in both engines: in the server through a wrapper around
startup.load_engine, so every run decodes the same length). Each measurement gets a prompt of
its own (`Request NNNN.` before the system prompt, same token count), so no path reuses another's
KV cache. Repeats interleave the paths (rotating their order); figures are medians.

Both sides time alike, as a client sees it: TTFT from the request to the first text; decode tok/s
= (completion tokens - 1) / (last text - first text). Targets (issue 13): the server decodes at
least 0.95x the in-process speed, and adds at most 50 ms to TTFT. The `engine tok/s` column is
the engine's own decode speed (the in-process Reply's; the server's access-log line for the HTTP
rows): equal there but lower at the client means the cost is on the way to the client.

The default model is the real test model (tests/real/model_fetch.py, imported once as float32).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path as FilePath
from typing import Any

ROOT = FilePath(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `tests.real.model_fetch` for the default model

TARGET_DECODE_RATIO = 0.95  # server decode tok/s / in-process decode tok/s, at least
TARGET_TTFT_MS = 50.0  # server TTFT - in-process TTFT, at most
IN_PROCESS = "in process"
_TOK_S = re.compile(r'"POST /v1/chat/completions" 200 .* ([\d.]+) tok/s')


@dataclass(frozen=True)
class Sample:
    ttft_s: float
    decode_tok_s: float
    tokens: int
    engine_tok_s: float | None = None  # the engine's own decode speed (in process, or the server's log line)


@dataclass(frozen=True)
class Path:
    name: str
    measure: Callable[[list[dict[str, str]]], Sample]


@dataclass(frozen=True)
class Row:
    name: str
    ttft_ms: float  # medians
    decode_tok_s: float
    ttft_ms_range: tuple[float, float]
    decode_range: tuple[float, float]
    tokens: int
    runs: int
    engine_tok_s: float | None = None  # median; tells a slower engine from a slower way to the client


def messages(n: int) -> list[dict[str, str]]:
    from qwenchat import bench

    chat = bench.short_chat()
    return [{"role": "system", "content": f"Request {n:04d}. {chat[0]['content']}"}, *chat[1:]]


def sample(t0: float, text_times: list[float], tokens: int, engine_tok_s: float | None = None) -> Sample:
    if not text_times:
        raise RuntimeError("the reply had no text")
    span = text_times[-1] - text_times[0]
    return Sample(text_times[0] - t0, (tokens - 1) / span if span > 0 else float("nan"), tokens, engine_tok_s)


# -- the paths ---------------------------------------------------------------------------------------


def forced(load: Callable[..., Any]) -> Callable[..., Any]:
    """startup.load_engine, with the model's end-of-sequence ids switched off (bench.py's decode)."""

    def load_forced(*args: Any, **kwargs: Any) -> Any:
        engine, label = load(*args, **kwargs)
        engine.defaults = replace(engine.defaults, eos_ids=frozenset())
        return engine, label

    return load_forced


def in_process(settings: Any, tokens: int) -> Path:
    from qwenchat import startup
    from qwenchat.engine.records import Chunk, GenerateOptions, Reply

    engine, _ = forced(startup.load_engine)(settings)
    options = GenerateOptions(temperature=0.0, max_new_tokens=tokens)

    def measure(msgs: list[dict[str, str]]) -> Sample:
        t0, times, reply = time.perf_counter(), [], None
        for event in engine.chat(msgs, options):
            if isinstance(event, Chunk) and event.text:
                times.append(time.perf_counter())
            elif isinstance(event, Reply):
                reply = event
        return sample(t0, times, reply.usage.completion_tokens, reply.timings.decode_tok_s)

    return Path(IN_PROCESS, measure)


def through_server(url: str, model: str, tokens: int, server: "Server", name: str = "server (openai, stream)") -> Path:
    import openai

    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)

    def measure(msgs: list[dict[str, str]]) -> Sample:
        seen = server.generations()
        t0, times, used = time.perf_counter(), [], 0
        stream = client.chat.completions.create(model=model, messages=msgs, temperature=0, max_tokens=tokens,
                                                stream=True, stream_options={"include_usage": True})
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                times.append(time.perf_counter())
            if chunk.usage is not None:
                used = chunk.usage.completion_tokens
        return sample(t0, times, used, server.engine_tok_s(after=seen))

    return Path(name, measure)


def ask_remote(url: str, tokens: int, home: FilePath, server: "Server") -> Path:
    """`qwenchat ask -m URL` against the server: its own timings (`--json`), the process start not
    counted. Raises RuntimeError naming the reason when this `ask` cannot do it."""
    env = dict(os.environ, QWENCHAT_HOME=str(home), HF_HUB_OFFLINE="1")

    def measure(msgs: list[dict[str, str]]) -> Sample:
        seen = server.generations()
        done = subprocess.run(
            [sys.executable, "-m", "qwenchat", "ask", "-m", url, "-n", "--json", "--temperature", "0",
             "--max-tokens", str(tokens), "-s", msgs[0]["content"], msgs[1]["content"]],
            capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=600)
        if done.returncode != 0:
            raise RuntimeError((done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1])
        out = json.loads(done.stdout)
        t = out["timings"]
        return Sample(t["ttft_s"], t["decode_tok_s"], out["usage"]["completion_tokens"], server.engine_tok_s(after=seen))

    return Path(f"qwenchat ask -m {url}", measure)


class Server:
    """`qwenchat serve` (forced decode) in a subprocess on a free port; its stderr kept."""

    def __init__(self, model: str, extra: list[str], home: FilePath) -> None:
        env = dict(os.environ, QWENCHAT_HOME=str(home), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        env.pop("QWENCHAT_API_KEY", None)
        cmd = [sys.executable, __file__, "--serve-child", "-m", model, "--port", "0", *extra]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(line.rstrip() for line in self.proc.stderr), daemon=True).start()

    def wait_ready(self, timeout: float = 900) -> str:
        deadline, url = time.monotonic() + timeout, None
        while time.monotonic() < deadline and self.proc.poll() is None:
            for line in list(self.lines):
                url = url or (m.group(1) if (m := re.search(r"listening on (http://\S+/v1)", line)) else None)
                if url and "ready, model" in line:
                    return url
            time.sleep(0.1)
        raise RuntimeError("the server did not start:\n" + "\n".join(self.lines[-20:]))

    def generations(self) -> int:
        """How many generation requests the access log has shown so far."""
        return len(self._generation_lines())

    def engine_tok_s(self, after: int, timeout: float = 5) -> float | None:
        """The server engine's decode tok/s of the next generation after `after` (its access log
        line is written once the response has gone out, so it may follow the client's return)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self._generation_lines()
            if len(lines) > after:
                return float(_TOK_S.search(lines[after]).group(1))
            time.sleep(0.02)
        return None

    def _generation_lines(self) -> list[str]:
        return [line for line in list(self.lines) if _TOK_S.search(line)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def serve_child(argv: list[str]) -> int:
    """The server subprocess: `qwenchat serve ARGS` with startup.load_engine forcing the decode."""
    from qwenchat import startup
    from qwenchat.cli import run

    startup.load_engine = forced(startup.load_engine)
    return run(["serve", *argv])


# -- measuring and reporting ------------------------------------------------------------------------


def measure_all(paths: list[Path], repeats: int, log: Callable[[str], None]) -> dict[str, list[Sample]]:
    samples: dict[str, list[Sample]] = {p.name: [] for p in paths}
    n = 0
    for r in range(repeats):
        for p in paths[r % len(paths):] + paths[: r % len(paths)]:  # rotate: no path always goes first
            n += 1
            s = p.measure(messages(n))
            samples[p.name].append(s)
            engine = f", engine {s.engine_tok_s:.1f}" if s.engine_tok_s is not None else ""
            log(f"  run {r + 1}/{repeats} {p.name}: TTFT {s.ttft_s * 1000:.0f} ms, decode {s.decode_tok_s:.1f} tok/s"
                f"{engine} ({s.tokens} tokens)")
    return samples


def summarise(name: str, runs: list[Sample]) -> Row:
    ttft = [s.ttft_s * 1000 for s in runs]
    dec = [s.decode_tok_s for s in runs]
    engine = [s.engine_tok_s for s in runs if s.engine_tok_s is not None]
    return Row(name, statistics.median(ttft), statistics.median(dec), (min(ttft), max(ttft)), (min(dec), max(dec)),
               runs[0].tokens, len(runs), statistics.median(engine) if engine else None)


def verdicts(base: Row, row: Row) -> list[tuple[str, str, bool]]:
    """(what, figure, met) of each target, `row` against the in-process `base`."""
    ratio = row.decode_tok_s / base.decode_tok_s
    extra = row.ttft_ms - base.ttft_ms
    return [
        (f"decode tok/s, {row.name} / in process", f"{ratio:.3f}x (target >= {TARGET_DECODE_RATIO})",
         ratio >= TARGET_DECODE_RATIO),
        (f"TTFT, {row.name} - in process", f"{extra:+.1f} ms (target <= {TARGET_TTFT_MS:.0f} ms)",
         extra <= TARGET_TTFT_MS),
    ]


def report(rows: list[Row]) -> str:
    w = max(len(r.name) for r in rows)
    lines = [f"{'path':<{w}} {'TTFT ms':>9} {'(min-max)':>13} {'decode tok/s':>13} {'(min-max)':>13} "
             f"{'engine tok/s':>13} {'tokens':>7} {'runs':>5}"]
    for r in rows:
        engine = f"{r.engine_tok_s:.2f}" if r.engine_tok_s is not None else "-"
        lines.append(f"{r.name:<{w}} {r.ttft_ms:>9.1f} {f'{r.ttft_ms_range[0]:.0f}-{r.ttft_ms_range[1]:.0f}':>13} "
                     f"{r.decode_tok_s:>13.2f} {f'{r.decode_range[0]:.1f}-{r.decode_range[1]:.1f}':>13} "
                     f"{engine:>13} {r.tokens:>7} {r.runs:>5}")
    base = next(r for r in rows if r.name == IN_PROCESS)
    checks = [v for r in rows if r is not base for v in verdicts(base, r)]
    if checks:
        lines.append("")
        ww = max(len(what) for what, _, _ in checks)
        lines += [f"{what:<{ww}}  {figure:<32} {'met' if met else 'NOT MET'}" for what, figure, met in checks]
    return "\n".join(lines)


def machine() -> str:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{cpu or 'unknown CPU'}, {os.cpu_count()} cores, load average {load}"


def default_model() -> str:
    from qwenchat.engine.gguf import import_gguf, import_is_current
    from tests.real.model_fetch import cache_dir, ensure_model_gguf

    gguf = ensure_model_gguf(cache_dir())
    out = gguf.parent / "imported-fp32"
    if not import_is_current(gguf, out, dtype="float32"):
        import_gguf(gguf, out, dtype="float32")
    return str(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve-child"]:
        return serve_child(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="model directory (default: the real test model)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--tokens", type=int, default=128, help="forced new tokens per request")
    p.add_argument("--device", default=None)
    p.add_argument("--quantize", default=None)
    p.add_argument("--every-token", action="store_true",
                   help="add a second server started with --stream-interval 0 (one event per token), "
                        "to show what the text batches save")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)

    import tempfile

    from qwenchat.config import Settings

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    model = args.model or default_model()
    extra = [f"--{k}={v}" for k, v in (("device", args.device), ("quantize", args.quantize)) if v]
    with tempfile.TemporaryDirectory(prefix="serve-overhead-") as home:
        os.environ["QWENCHAT_HOME"] = home  # the int8 cache and kernel, shared by both sides
        start = machine()
        server = Server(model, extra, FilePath(home))
        every = Server(model, [*extra, "--stream-interval=0"], FilePath(home)) if args.every_token else None
        try:
            log("loading the model in the server, then here (the server writes the int8 cache, this reads it)…")
            url = server.wait_ready()
            paths = [in_process(Settings(model=model, device=args.device, quantize=args.quantize), args.tokens),
                     through_server(url, model, args.tokens, server)]
            if every is not None:
                paths.append(through_server(every.wait_ready(), model, args.tokens, every,
                                            "server, every token (--stream-interval 0)"))
            paths += optional_ask_row(url, args.tokens, FilePath(home), server, log)
            log("warming up")
            measure_all(paths, 1, lambda _t: None)
            log(f"measuring: {args.repeats} interleaved repeats")
            samples = measure_all(paths, args.repeats, log)
        finally:
            server.stop()
            if every is not None:
                every.stop()
        rows = [summarise(name, runs) for name, runs in samples.items()]
    if args.json:
        print(json.dumps({"machine_start": start, "machine_end": machine(), "model": model,
                          "rows": [asdict(r) for r in rows]}, indent=2))
    else:
        print(f"model {model}; {rows[0].tokens} forced tokens, greedy\nmachine at start: {start}\n"
              f"machine at end:   {machine()}\n")
        print(report(rows))
    return 0


def optional_ask_row(url: str, tokens: int, home: FilePath, server: "Server", log: Callable[[str], None]) -> list[Path]:
    """The `qwenchat ask -m URL` row, if this qwenchat's ask can talk to the server."""
    path = ask_remote(url, tokens, home, server)
    try:
        path.measure(messages(0))
    except (RuntimeError, KeyError, ValueError) as e:
        log(f"left out: {path.name} ({e})")
        return []
    return [path]


if __name__ == "__main__":
    sys.exit(main())
