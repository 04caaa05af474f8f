"""The engines that `compare.py` runs side by side, each called in a worker process of its own
(`compare.py --worker KIND`; `gpu_speed.py` calls ours then transformers in one process): ours
through `qwenchat.bench.run`, transformers `generate()` on the GGUF or an HF folder, llama.cpp
(llama-cpp-python) on the GGUF as is. Each returns a flat dict of the
measures of `compare.MEASURES` for the same token ids (`spec`, prepared once by compare.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def worker_ours(spec: dict[str, Any], options: dict[str, str]) -> dict[str, Any]:
    from qwenchat import bench

    workload = bench.QUICK if spec["quick"] else bench.FULL
    result = bench.run(spec["model_dir"], device=spec["device"], workload=workload, **options)
    assert result["long_prompt_tokens"] == len(spec["long_ids"]), "ours tokenized a different conversation"
    return result


class _FirstTokenTimer:
    """A transformers streamer that notes when the first new token arrives."""

    def __init__(self) -> None:
        self.calls, self.t_first = 0, None

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 2:  # the first call carries the prompt
            self.t_first = time.perf_counter()

    def end(self) -> None:
        pass


def worker_hf(spec: dict[str, Any], dtype: str, device: str = "cpu") -> dict[str, Any]:
    """transformers on `spec["gguf"]` when the spec has one (compare.py), else on the HF-format
    folder `spec["model_dir"]` (gpu_speed.py), on `device`."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.logging.set_verbosity_error()
    t0 = time.perf_counter()
    if spec.get("gguf"):
        gguf = Path(spec["gguf"])
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=getattr(torch, dtype))
    else:
        model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=getattr(torch, dtype))
    model = model.to(device).eval()
    load_s = time.perf_counter() - t0
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def generate(ids: list[int], n: int) -> tuple[float, float, int]:
        timer = _FirstTokenTimer()
        x = torch.tensor([ids], device=device)
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(x, attention_mask=torch.ones_like(x), min_new_tokens=n, max_new_tokens=n,
                                 do_sample=False, repetition_penalty=1.0, streamer=timer,
                                 pad_token_id=spec.get("pad_id", 151643))
        sync()
        end = time.perf_counter()
        return timer.t_first - start, end - timer.t_first, out.shape[1] - len(ids)

    first_ttft, _, _ = generate(spec["short_ids"], 2)  # warm-up, as ours has its first request
    ttft, decode_s, n = generate(spec["short_ids"], spec["decode_tokens"])
    result = {"load_s": load_s, "first_ttft_s": first_ttft, "ttft_s": ttft,
              "short_prefill_tok_s": len(spec["short_ids"]) / ttft,
              "decode_tokens": n, "decode_tok_s": (n - 1) / decode_s}
    if dtype == "float32" or spec["bf16_long"]:
        long_s, _, _ = generate(spec["long_ids"], 1)
        follow_s, _, _ = generate(spec["followup_ids"], 1)  # re-prefills the whole conversation
        result |= {"long_prefill_s": long_s, "long_prefill_tok_s": len(spec["long_ids"]) / long_s,
                   "followup_ttft_s": follow_s}
    return result


def worker_llama(spec: dict[str, Any]) -> dict[str, Any]:
    from llama_cpp import Llama

    t0 = time.perf_counter()
    llm = Llama(model_path=spec["gguf"], n_ctx=len(spec["followup_ids"]) + 256, n_threads=os.cpu_count(),
                n_batch=512, verbose=False)
    load_s = time.perf_counter() - t0

    def generate(ids: list[int], n: int, fresh: bool) -> tuple[float, float, int]:
        if fresh:
            llm.reset()
        got, t_first = 0, None
        start = time.perf_counter()
        for _tok in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
            got += 1
            if got == 1:
                t_first = time.perf_counter()
            if got >= n:  # forced length: end-of-sequence tokens do not stop it
                break
        return t_first - start, time.perf_counter() - t_first, got

    first_ttft, _, _ = generate(spec["short_ids"], 2, True)
    ttft, decode_s, n = generate(spec["short_ids"], spec["decode_tokens"], True)
    long_s, _, _ = generate(spec["long_ids"], 1, True)
    follow_s, _, _ = generate(spec["followup_ids"], 1, False)  # llama.cpp reuses the common prefix
    return {"load_s": load_s, "first_ttft_s": first_ttft, "ttft_s": ttft,
            "short_prefill_tok_s": len(spec["short_ids"]) / ttft, "decode_tokens": n,
            "decode_tok_s": (n - 1) / decode_s, "long_prefill_s": long_s,
            "long_prefill_tok_s": len(spec["long_ids"]) / long_s, "followup_ttft_s": follow_s}
