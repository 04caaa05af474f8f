"""The GPU's recorded decode step (cuda_graph.py), checked where it can be on a CPU: the static
step it records (position in a tensor, attention over a fixed span, keys/values by index_copy_)
gives the eager step's logits and cache, across span boundaries. Recording and replay themselves
are tested on a GPU (test_cuda.py)."""

from __future__ import annotations

import pytest
import torch

from qwenchat.engine import cuda_graph
from qwenchat.engine.errors import SettingsError
from qwenchat.engine.cuda_graph import GRAPHS_ENV, GraphDecoder
from tests.engine.conftest import load_ours, new_cache


def test_the_static_step_equals_the_eager_one_across_span_boundaries(tiny_models, monkeypatch):
    monkeypatch.setattr(cuda_graph, "SPAN_STEP", 16)
    model, cfg = load_ours(tiny_models["qwen25_05b"], max_len=64)
    static = GraphDecoder(model, record=False)
    eager, graphed = new_cache(cfg, 64), new_cache(cfg, 64)
    graphed.k.zero_(), graphed.v.zero_()  # as a GPU's cache starts (cache.py)
    prompt = torch.randint(0, 480, (1, 9), generator=torch.Generator().manual_seed(4))
    want, got = model(prompt, eager, 0)[0, -1], model(prompt, graphed, 0)[0, -1]
    for pos in range(9, 40):  # spans 16, 32, 48
        token = want.argmax().view(1, 1)
        assert torch.equal(token, got.argmax().view(1, 1))
        want = model(token, eager, pos)[0, -1]
        got = static.step(token, graphed, pos)[0, -1]
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(graphed.k[:, :, :, : pos + 1], eager.k[:, :, :, : pos + 1], atol=1e-4, rtol=1e-3)
    assert sorted(static._recorded) == [16, 32, 48]


def test_graphs_are_for_float_weights_on_a_cuda_device_unless_switched_off():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert GraphDecoder.supports(cuda, "none", {})
    assert not GraphDecoder.supports(cuda, "int8", {}) and not GraphDecoder.supports(cuda, "int4", {})
    assert not GraphDecoder.supports(cpu, "none", {})
    assert not GraphDecoder.supports(cuda, "none", {GRAPHS_ENV: "0"})
    assert GraphDecoder.supports(cuda, "none", {GRAPHS_ENV: "1"})
    with pytest.raises(SettingsError, match=f"{GRAPHS_ENV}='yes' is not 0 or 1") as err:
        GraphDecoder.supports(cuda, "none", {GRAPHS_ENV: "yes"})  # it read as "on", silently
    assert f"{GRAPHS_ENV}=0" in err.value.hint


def test_a_cpu_model_has_no_graphs(tiny_models):
    model, _ = load_ours(tiny_models["qwen25_05b"])
    assert model.graphs is None


def test_another_cache_drops_the_graphs_of_the_last(tiny_models):
    """Graphs hold their cache's addresses: a new cache gets its own, and the old ones go (with
    the buffers they kept alive)."""
    model, cfg = load_ours(tiny_models["qwen25_05b"], max_len=64)
    static = GraphDecoder(model, record=False)
    first, second = new_cache(cfg, 64), new_cache(cfg, 64)
    token = torch.tensor([[5]])
    static.step(token, first, 0)
    static.step(token, second, 20)
    assert list(static._recorded) == [64] and static._recorded[64].cache[0] is second.k


def test_a_failed_recording_leaves_decoding_to_the_eager_step(tiny_models, monkeypatch):
    model, cfg = load_ours(tiny_models["qwen25_05b"], max_len=64)
    graphs = GraphDecoder(model, record=False)
    model.graphs = graphs

    def broken(*args):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs, "_prepare", broken)
    eager, cache = new_cache(cfg, 64), new_cache(cfg, 64)
    prompt = torch.randint(0, 480, (1, 5), generator=torch.Generator().manual_seed(1))
    model(prompt, eager, 0), model(prompt, cache, 0)
    token = torch.tensor([[7]])
    want = model.logits(model.hidden(token, eager, 5))
    got = model(token, cache, 5)
    assert graphs.failure.startswith("RuntimeError: CUDA error") and torch.equal(got, want)
    assert graphs.step(token, cache, 6) is None  # and stays off
