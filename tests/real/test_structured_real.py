"""Structured output on the real test model (issue 17): fields extracted from a fixed text into
a schema validate and are right; the same prompt without the constraint is recorded for
comparison (how often it was valid JSON matching the schema)."""

from __future__ import annotations

import json

import jsonschema
import pytest

from qwenchat.engine.chat import ChatEngine
from qwenchat.engine.records import GenerateOptions, Reply

TEXT = ("Invoice 2024-117 from Acme Tools GmbH, Berlin, dated 3 March 2024. Three items: a hammer, "
        "a saw and a box of nails. Total due: 1250.50 EUR within 30 days.")
SCHEMA = {
    "type": "object",
    "properties": {
        "vendor": {"type": "string"},
        "invoice_number": {"type": "string"},
        "currency": {"enum": ["EUR", "USD", "GBP"]},
        "total": {"type": "number"},
        "items": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["vendor", "invoice_number", "currency", "total", "items"],
}
PROMPT = [{"role": "user", "content": f"Extract the invoice's fields.\n\n{TEXT}\n\n"
                                      f"Reply with JSON only, matching this JSON schema:\n{json.dumps(SCHEMA)}"}]


@pytest.fixture
def engine(real_engine_int8: ChatEngine) -> ChatEngine:
    """The tier's engine with the default CPU settings (tests/real/conftest.py), nothing cached."""
    real_engine_int8.reset_cache()
    return real_engine_int8


def _reply(engine: ChatEngine, options: GenerateOptions) -> Reply:
    *_, reply = engine.chat(PROMPT, options)
    assert isinstance(reply, Reply)
    return reply


def test_extraction_validates_and_is_right(engine: ChatEngine) -> None:
    reply = _reply(engine, GenerateOptions(temperature=0, max_new_tokens=200, constraint=SCHEMA))
    assert reply.finish_reason == "stop", reply.text
    data = json.loads(reply.text)
    jsonschema.validate(data, SCHEMA)
    assert "Acme" in data["vendor"] and data["currency"] == "EUR" and data["total"] == pytest.approx(1250.5)
    assert "117" in data["invoice_number"] and len(data["items"]) == 3


def test_unconstrained_baseline_is_recorded(engine: ChatEngine, record_property) -> None:
    valid = 0
    for seed in range(3):
        text = _reply(engine, GenerateOptions(temperature=0.7, seed=seed, max_new_tokens=200)).text
        try:
            jsonschema.validate(json.loads(text), SCHEMA)
            valid += 1
        except (ValueError, jsonschema.ValidationError):
            pass  # a code fence around it, or a wrong field: what the constraint prevents
    record_property("unconstrained_valid", f"{valid}/3")
    print(f"unconstrained: {valid}/3 replies were valid JSON matching the schema")
