"""`qwenchat ask`: one question, one streamed answer, pipe-friendly.

The PROMPT argument is the instruction and piped stdin is the material: with both, the message
is the instruction, a blank line, then the stdin text. The reply goes to stdout (plain text when
stdout is not a terminal, rendered Markdown when it is); progress, warnings and usage go to
stderr. Every exchange is saved in the history store unless --no-save.
"""

from __future__ import annotations

import sys
import time
from contextlib import closing
from dataclasses import replace
from typing import TYPE_CHECKING, Optional

import typer

from qwenchat.cli import signals
from qwenchat.cli.app import app, settings_with_flags, warn
from qwenchat.cli.ask_input import check_prompt, nothing_to_ask, read_stdin, stdin_is_terminal
from qwenchat.cli.ask_keep import keep_unsent
from qwenchat.cli.ask_report import print_json, print_usage
from qwenchat.cli.ask_spinner import spinner
from qwenchat.config import QUANTIZE_HELP
from qwenchat.structured import constraint_from_flags, parse_reply
from qwenchat.errors import QwenchatError, UsageError
from qwenchat.remote.errors import RemoteError
from qwenchat.fit import CUTS

if TYPE_CHECKING:
    from qwenchat.engine.records import Reply
    from qwenchat.session import ChatSession, Turn

PRETTY_HZ = 8  # redraws a second of a reply rendered as Markdown on a terminal
JSON_WAIT = "generating JSON…"  # on stderr while a JSON reply (--schema, --json-object, --json) is written
REPLY_WAIT = "generating…"  # on stderr while a --no-stream reply is written (shown once it is whole)
SEND_TRIES = 5  # times a message is sent again after another window's got in first


@app.command(help="Ask one question; the reply streams to stdout. Piped stdin is added as material.")
def ask(
    words: Optional[list[str]] = typer.Argument(None, metavar="PROMPT", help="The instruction (quoted, or the words as they come). Piped stdin, if any, follows it."),
    model: Optional[str] = typer.Option(None, "-m", "--model", help="Alias, Hub repo id, local directory, .gguf file, or a server's URL (http://host:8000/v1[#MODEL])."),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="Key for a server (else config api_key, QWENCHAT_API_KEY, OPENAI_API_KEY). Never stored."),
    system: Optional[str] = typer.Option(None, "-s", "--system", help="System prompt (with -c/--cid: replaces the conversation's)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Use a saved system-prompt preset (as --system)."),
    cont: bool = typer.Option(False, "-c", "--continue", help="Continue the most recent conversation."),
    cid: Optional[int] = typer.Option(None, "--cid", help="Continue the conversation with this id."),
    no_save: bool = typer.Option(False, "-n", "--no-save", help="Store nothing in the history."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="0 = greedy."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Sample from the K likeliest tokens (0 = off)."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Sample from the likeliest tokens holding this much probability (1 = off)."),
    min_p: Optional[float] = typer.Option(None, "--min-p", help="Drop tokens below this share of the likeliest one's probability (0 = off)."),
    repetition_penalty: Optional[float] = typer.Option(None, "--repetition-penalty", help="Above 1 makes tokens already used less likely (1 = off)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Most tokens to generate."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Same seed and settings give the same text."),
    stop: list[str] = typer.Option([], "--stop", metavar="TEXT", help="Stop when this text appears (repeatable)."),
    raw: bool = typer.Option(False, "--raw", help="Raw text continuation, no chat template (base models)."),
    truncate: Optional[str] = typer.Option(None, "--truncate", help="If piped input is too long: 'head' drops its beginning, 'tail' its end (the PROMPT is never cut)."),
    max_input: Optional[str] = typer.Option(None, "--max-input", metavar="BYTES", help="Most bytes of stdin to read, e.g. 2M (default: 16 per token of the context window)."),
    context_limit: Optional[int] = typer.Option(None, "--context-limit", help="Context window in tokens."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto, float32, bfloat16 or float16."),
    quantize: Optional[str] = typer.Option(None, "--quantize", help=QUANTIZE_HELP),
    plain: bool = typer.Option(False, "--plain", help="Plain text even on a terminal."),
    no_stream: bool = typer.Option(False, "--no-stream", help="Print the reply when it is complete."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with the reply and its stats."),
    schema: Optional[str] = typer.Option(None, "--schema", metavar="SCHEMA", help="Reply with JSON valid against this JSON Schema: inline JSON, a file, fields like 'name, age int, bio: a short bio', or json (any object)."),
    json_object: bool = typer.Option(False, "--json-object", help="Reply with a JSON object (any keys)."),
    no_schema: bool = typer.Option(False, "--no-schema", help="Reply in free text again: drop the schema a continued conversation saved."),
    usage: bool = typer.Option(False, "-u", "--usage", help="Print token counts and speeds to stderr."),
) -> None:
    prompt = " ".join(words) if words else None  # `ask what is a monad` as `ask "what is a monad"`
    if truncate not in (None, *CUTS):
        raise UsageError(f"--truncate is {truncate!r}", "use --truncate head or --truncate tail")
    if cont and cid is not None:
        raise UsageError("--continue and --cid both given", "use one of them")
    if system is not None and preset is not None:  # the preset won and --system was dropped
        raise UsageError("--system and --preset both given", "use one of them: a preset is a saved system prompt")
    if no_save and (cont or cid is not None):
        raise UsageError("--no-save cannot continue a stored conversation", "drop --no-save or --continue/--cid")
    check_prompt(prompt, stdin_is_terminal())
    constraint = constraint_from_flags(schema, json_object, no_schema)
    flags = dict(model=model, device=device, dtype=dtype, quantize=quantize, context_limit=context_limit, temperature=temperature,
                 top_k=top_k, top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty,
                 max_tokens=max_tokens, seed=seed, max_input=max_input, api_key=api_key)
    settings = settings_with_flags(flags)
    store = None if no_save else _open_store()
    try:
        system = _system(store, system, preset)
        try:
            session = _session(settings, flags, store, system, cont, cid, raw, tuple(stop))
        except RemoteError as e:  # no reply could begin: the message is kept all the same
            raise keep_unsent(e, store, settings, flags, system, cont, cid, prompt, truncate) from None
        if constraint is not None or (no_schema and session.options.constraint is not None):
            # checked by the engine here, before anything is generated; saved with the conversation
            session.set_options(replace(session.options, constraint=constraint))
        elif session.options.constraint is not None:
            warn("this conversation replies in JSON (the schema saved with it); --no-schema for free text")
        constraint = session.options.constraint
        text = _message(session, prompt, settings.max_input, truncate)
        # structured replies are printed whole, and only when they are complete JSON
        output = "none" if as_json or constraint is not None else "end" if no_stream else "stream"
        try:
            turn = _run(session, text, pretty=constraint is None and _pretty(plain, as_json), output=output)
        finally:
            _say_notes(session)  # a setting the server refused: said even when the reply failed
    finally:
        if store is not None:
            store.close()
    complete, parsed = parse_reply(turn.reply.text) if constraint is not None else (True, None)
    if as_json:
        print_json(session, turn, {"parsed": parsed} if constraint is not None else {})
    elif constraint is not None and complete:
        sys.stdout.write(turn.reply.text + "\n")
        sys.stdout.flush()
    if usage:
        print_usage(turn.reply, session.model_info)
    signals.check()  # a Ctrl+C that stopped the reply: exit 130 now that its counts are out
    if not complete:
        raise _incomplete(turn)


def _incomplete(turn: "Turn") -> QwenchatError:
    reply = turn.reply
    saved = f"; the partial reply is saved (message {turn.message_id})" if turn.message_id is not None else ""
    if reply.finish_reason == "length":
        return QwenchatError(f"incomplete JSON: the reply was cut by the token limit after "
                             f"{reply.usage.completion_tokens} tokens{saved}", "raise --max-tokens")
    return QwenchatError(f"incomplete JSON: the reply stopped early ({reply.finish_reason}){saved}",
                         "drop --stop strings that can occur inside the JSON")


def _open_store():
    from qwenchat.store import Store

    return Store.open()


def _system(store, system: str | None, preset: str | None) -> str | None:
    """The system prompt: --preset's text, else --system."""
    if preset is None:
        return system
    if store is None:
        from qwenchat.store import Store

        with Store.open() as s:
            return s.get_preset(preset).text
    return store.get_preset(preset).text


def _session(settings, flags, store, system, cont, cid, raw, stop) -> "ChatSession":
    from qwenchat.session import ChatSession
    from qwenchat.startup import choose_start, flag_overrides, options_from_settings

    conversation = None
    if store is not None and (cont or cid is not None):
        start = choose_start(store, flags.get("model"), cont, cid, need_one=True)
        conversation = start.conversation
        settings = settings.merged({"model": start.model})  # its own model unless -m
    engine, label = _load(settings, flags)
    session = ChatSession(engine, store, model_label=label, system_prompt=system,
                          options=options_from_settings(settings, stop), raw=raw)
    for note in session.model_info.notes:  # a damaged int8 cache rebuilt, an unsafe kernel folder refused
        warn(note)
    if conversation is not None:
        session.load(conversation.id)  # its own saved settings; this command line's options win
        session.options = replace(session.options, stop=stop, **flag_overrides(flags))
        if system is not None and system != session.system_prompt:
            if session.system_prompt:
                warn(f"conversation {conversation.id}'s system prompt is replaced by this one "
                     "(its earlier replies were written under the old one)")
            session.set_system_prompt(system)
    elif not raw and not session.model_info.chat_tuned:
        warn(f"{label} is a base model, not a chat model: continuing your text as raw completion")
        session.raw = True
    return session


def _load(settings, flags):
    """Download the model if needed (a progress bar on stderr), then load it (a spinner on a
    terminal). One after the other: rich draws one live display at a time. A server's URL is
    connected to instead: the local engine's flags do not apply there, and are said so."""
    from qwenchat.cli.models import RichDownloadProgress
    from qwenchat.remote.reference import is_remote
    from qwenchat.startup import find_local, load_engine

    if is_remote(settings.model):
        ignored = [f"--{k.replace('_', '-')}" for k in LOCAL_ONLY_FLAGS if flags.get(k) is not None]
        if ignored:
            verb, these = ("applies", "that") if len(ignored) == 1 else ("apply", "those")
            warn(f"{', '.join(ignored)} {verb} to a local model only; the server decides {these}")
        return _spinning("connecting to the server…", lambda: load_engine(settings))
    resolved, converting = find_local(settings, RichDownloadProgress())
    return _spinning(f"loading model… {converting}" if converting else "loading model…",
                     lambda: load_engine(settings, resolved=resolved))


LOCAL_ONLY_FLAGS = ("device", "dtype", "quantize", "context_limit")


def _spinning(what: str, work):
    with spinner(what):
        return work()


def _say_notes(session: "ChatSession") -> None:
    for note in session.take_notes():
        warn(note)


def _message(session: "ChatSession", prompt: str | None, max_input: int | None, truncate: str | None) -> str:
    """The message to send: the PROMPT and what stdin holds (read within the input limit),
    with the piped part cut to fit when --truncate says so."""
    from qwenchat.fit import fit_message, input_limit

    piped = read_stdin(input_limit(session, max_input), keep_end=truncate == "head")
    if prompt is None and piped is None:
        raise nothing_to_ask(" (stdin was empty or only whitespace)")
    fitted = fit_message(session, prompt, piped, truncate)
    if fitted.marker:
        part = "beginning" if truncate == "head" else "end"
        warn(f"input too long for the context window: dropped the {part} of the piped input {fitted.marker}")
    return fitted.text


def _pretty(plain: bool, as_json: bool) -> bool:
    return not plain and not as_json and sys.stdout.isatty()


def _run(session: "ChatSession", text: str, pretty: bool, output: str) -> "Turn":
    """Generate the reply; `output` is "stream" (as it comes), "end" (when complete) or "none"."""
    # a first Ctrl+C (or SIGTERM) stops the reply within a token and it ends as a cancelled one,
    # counted and saved as interrupted (signals.cancelling); closing() saves it while the store is
    # open when it ends otherwise (a second signal, a closed pipe)
    with closing(_begin(session, text)) as events, signals.cancelling(session.cancel):
        turn = _run_pretty(events, output == "stream") if pretty else _run_plain(events, output)
    _say_how_it_ended(turn.reply, shown=output != "none", continued=len(session.entries) > 2)
    if turn.note:  # another window wrote to this conversation meanwhile: this reply is on a branch
        warn(turn.note)
    return turn


def _begin(session: "ChatSession", text: str):
    """The events of this turn, once no other window is answering at the end of the
    conversation. Two windows that both found it free a moment apart: the store takes the
    first one's message, and the other waits for that reply and tries again."""
    from qwenchat.errors import ConversationChanged

    signals.check()  # a Ctrl+C while the model loaded must not be lost (signals.py)
    tries = 1
    while True:
        stuck = _wait_for_other_windows(session)
        try:
            return _turn(session, text, anyway=stuck)
        except ConversationChanged:
            if tries == SEND_TRIES:
                raise
            tries += 1


def _wait_for_other_windows(session: "ChatSession") -> bool:
    """Another window is answering at the end of this conversation: wait for its reply to end,
    so this message follows it (qwenchat/other_window.py). True when the wait gave up (the
    other window stalled): the message goes anyway."""
    from qwenchat import other_window

    wait = other_window.OtherWindowWait(session)
    if wait.busy() is None:
        return False
    warn("another window is writing a reply in this conversation: this message waits for it (Ctrl+C stops)")
    while wait.busy() is not None:
        time.sleep(other_window.POLL_S)
    if wait.stuck:
        warn(f"nothing changed there for {other_window.STUCK_S:.0f} s: sending now")
    return wait.stuck


def _turn(session: "ChatSession", text: str, anyway: bool = False):
    """The events of this turn. The same message again, after a failure left it stored without
    a reply (a server that could not be reached: the message is kept), is answered where it is,
    not stored a second time: `ask -c "again"` run twice had the conversation say it twice."""
    session.sync()
    last = session.entries[-1] if session.entries else None
    if last is not None and last.role == "user" and last.id is not None and last.content == text:
        return session.regenerate()
    return session.send(text, anyway=anyway)


def _say_how_it_ended(reply: "Reply", shown: bool, continued: bool = False) -> None:
    """What the printed reply does not show by itself (on stderr, for the pretty and plain ways)."""
    if reply.dropped_messages:
        warn(f"left out the {reply.dropped_messages} oldest messages to fit the context window")
    if shown and reply.finish_reason == "length":  # a structured reply says so in its own error
        kept = " (this conversation keeps the limit it was given)" if continued else ""
        warn(f"the reply was cut at the token limit ({reply.usage.completion_tokens} tokens); "
             f"raise it with --max-tokens{kept}")


def _run_plain(events, output: str) -> "Turn":
    if output != "stream":  # stdout shows nothing until the reply is whole
        turn = _whole(events, JSON_WAIT if output == "none" else REPLY_WAIT)
        if output == "end":
            sys.stdout.write(turn.reply.text + "\n")
            sys.stdout.flush()
        return turn
    from qwenchat.engine.records import Chunk

    turn, out = None, sys.stdout
    try:
        for event in events:
            signals.check()
            if isinstance(event, Chunk):
                out.write(event.text)
                out.flush()
            else:
                turn = event
    except KeyboardInterrupt:
        out.write("\n")
        out.flush()
        raise
    assert turn is not None
    out.write("\n")
    out.flush()
    return turn


def _whole(events, wait: str) -> "Turn":
    """The reply's end; meanwhile stderr says work goes on: `wait` and the tokens so far."""
    from qwenchat.engine.records import Chunk

    turn, chunks = None, 0
    with spinner(wait) as say:
        for event in events:
            signals.check()
            if isinstance(event, Chunk):
                chunks += 1  # a token's text each (rarely two tokens' when one held back a broken character)
                say(f"{wait} {chunks} token{'' if chunks == 1 else 's'}")
            else:
                turn = event
    assert turn is not None
    return turn


def _run_pretty(events, stream: bool) -> "Turn":
    """Markdown drawn live on the terminal (cli/live_reply.py). The growing reply is drawn at most
    PRETTY_HZ times a second (it was parsed whole at every token, on the engine's own thread:
    quadratic in the reply), and the engine never waits long for the GIL while rich's refresh
    thread draws."""
    from rich.console import Console

    from qwenchat.cli.live_reply import LiveReply
    from qwenchat.cli.quiet_keys import quiet_keys
    from qwenchat.engine.records import Chunk
    from qwenchat.gil_handoff import GilHandoff

    turn, drawn_at = None, 0.0
    handoff = GilHandoff()
    handoff.start()
    try:
        if not stream:  # --no-stream: the spinner while it is written, then the reply drawn once
            turn = _whole(events, REPLY_WAIT)
            with quiet_keys(sys.stdout), LiveReply(Console(), PRETTY_HZ) as reply:
                reply.finish(turn.reply.text)
            return turn
        with quiet_keys(sys.stdout), LiveReply(Console(), PRETTY_HZ) as reply:
            try:
                for event in events:
                    signals.check()
                    if isinstance(event, Chunk):
                        reply.add(event.text)
                        if time.monotonic() - drawn_at >= 1 / PRETTY_HZ:
                            reply.draw()
                            drawn_at = time.monotonic()
                    else:
                        turn = event
            except KeyboardInterrupt:  # Ctrl+C, SIGTERM: the display ends on all the text that came
                reply.finish()
                raise
            reply.finish(turn.reply.text if turn else None)
    finally:
        handoff.stop()
    assert turn is not None
    return turn
