"""`qwenchat bench` through the CLI entry point on the tiny model: the table and --json."""

from __future__ import annotations

import json

from qwenchat import bench
from qwenchat.cli import run


def test_json_output_parses_with_the_documented_keys(tiny_model, capsys):
    rc = run(["bench", "-m", str(tiny_model), "--quick", "--json", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0
    obj = json.loads(out)
    assert set(bench.INFO_KEYS) <= set(obj) and set(bench.FIELDS) <= set(obj)
    assert obj["device"] == "cpu" and obj["decode_tok_s"] > 0 and obj["followup_cached_tokens"] > 0


def test_table_output_names_the_measures(tiny_model, capsys):
    rc = run(["bench", "-m", str(tiny_model), "--quick"])
    out = capsys.readouterr().out
    assert rc == 0
    for label in ("load time", "decode", "prefill, long prompt", "follow-up turn: time to first token", "peak memory"):
        assert label in out
    assert "float32" in out


def test_unknown_model_is_a_clean_error(capsys):
    rc = run(["bench", "-m", "no/such-model-here", "--quick"])
    assert rc != 0
    assert "Traceback" not in capsys.readouterr().err
