"""A model's generation_config.json: its sampling defaults are used when they are usable, and a
broken or out-of-range value gives way to transformers' default instead of failing every chat."""

from __future__ import annotations

import json

from qwenchat.engine.generation_config import HF_DEFAULTS, GenerationDefaults


def write(tmp_path, **values):
    (tmp_path / "generation_config.json").write_text(json.dumps(values))
    return GenerationDefaults.from_dir(tmp_path)


def test_usable_defaults_are_taken(tmp_path):
    d = write(tmp_path, do_sample=True, temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=1.05,
              eos_token_id=[7, 8], max_new_tokens=99)
    s = d.sampling
    assert (s.temperature, s.top_k, s.top_p, s.repetition_penalty) == (0.7, 20, 0.8, 1.05)
    assert d.eos_ids == {7, 8} and d.max_new_tokens == 99


def test_broken_or_out_of_range_values_give_way_to_the_usual_defaults(tmp_path):
    d = write(tmp_path, do_sample=True, temperature=1e30, top_k=2_000_000, top_p="high", min_p=None,
              repetition_penalty=True)
    s = d.sampling
    assert (s.temperature, s.top_k, s.top_p, s.min_p, s.repetition_penalty) == tuple(
        HF_DEFAULTS[k] for k in ("temperature", "top_k", "top_p", "min_p", "repetition_penalty"))
    s.validate()  # a chat with these defaults works


def test_whole_floats_are_whole_numbers_and_without_sampling_it_is_greedy(tmp_path):
    d = write(tmp_path, top_k=40.0, temperature=0.9)
    assert d.sampling.top_k == 40 and d.sampling.temperature == 0.0
