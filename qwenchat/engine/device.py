"""Choosing where and at what precision the model runs.

auto: CUDA, then MPS, then CPU. Default dtype: bf16 on CUDA (fp16 where the GPU lacks bf16),
fp16 on MPS, fp32 on CPU, because bf16 matrix products are several times slower on CPUs without
native bf16 units. Every choice comes with a reason the user can read.

Weights: with the dtype left to us on the CPU, the matrices of models of 100M+ parameters are held as int8 (weight-only, per-row
scales; activations stay float32): a quarter of the memory and of the bytes each decoded token
reads. That default holds only while the quality guard (tests/real/test_quality_guard.py) passes;
`quantize="none"` keeps full-precision weights. Elsewhere the default is full precision.

Prompt products of quantized weights on CPUs with matrix units (AMX, Intel Xeon 4th generation
on): `amx_prompts` says whether they run there (quantize.py's Scratch): int8 weights times int8
rows on the int8 tiles (native/int8_prompts.c), int4 weights in bfloat16 past 224 rows, and the
prompt's attention in bfloat16. On such a Xeon (2 cores) a 42-token prompt's time to first
token fell 0.13 -> 0.06-0.075 s that way (BENCHMARKS.md, twelfth session); other CPUs keep
float32 products. QWENCHAT_AMX_PROMPTS=0 keeps float32 (=1 forces the matrix units' numerics,
in plain C loops where the CPU has no tiles: for tests).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from qwenchat.engine.errors import SettingsError
from qwenchat.engine.records import QUANTIZE_MODES

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}
DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype
    reason: str

    @property
    def dtype_name(self) -> str:
        return DTYPE_NAMES[self.dtype]


def choose(device: str | None = "auto", dtype: str | None = "auto") -> Placement:
    dev, dev_reason = _device(device or "auto")
    dt, dt_reason = _dtype(dev, dtype or "auto")
    return Placement(dev, dt, f"{dev_reason}; {dt_reason}")


CPU_DEFAULT_QUANTIZE = "int8"
INT8_MIN_PARAMS = 100_000_000  # below this the weights are small and fast anyway: keep them exact


def choose_quantize(
    requested: str | None, placement: Placement, dtype_requested: str | None, n_params: int
) -> tuple[str, str]:
    """("none", "int8" or "int4", the reason) for the weights of a model of `n_params` matrix
    parameters placed by `placement`. int4 is never chosen by "auto" (see CPU_DEFAULT_QUANTIZE)."""
    req = (requested or "auto").strip().lower()
    if req not in QUANTIZE_MODES:
        raise SettingsError(f"unknown quantize mode {requested!r}", f"use one of: {', '.join(QUANTIZE_MODES)}")
    if req in ("int8", "int4"):
        how = "" if placement.device.type == "cpu" else "; dequantized per product on this device"
        what = "weight-only, per row" if req == "int8" else "group-wise, 32 columns a scale and a minimum"
        return req, f"{req} weights, as requested (lossy, {what}{how})"
    if req == "none":
        return "none", "full-precision weights, as requested"
    dtype_auto = (dtype_requested or "auto").strip().lower() == "auto"
    if placement.device.type == "cpu" and dtype_auto and CPU_DEFAULT_QUANTIZE == "int8":
        if n_params >= INT8_MIN_PARAMS:
            return "int8", "int8 weights on the CPU (weight-only, per row; --quantize none for full precision)"
        return "none", "full-precision weights (small model: int8 would gain little)"
    return "none", "full-precision weights"


AMX_PROMPTS_ENV = "QWENCHAT_AMX_PROMPTS"


def amx_prompts(
    placement: Placement, quantize: str, environ: Mapping[str, str] | None = None, tiles: bool = True
) -> bool:
    """Whether a prompt's products with quantized weights run on the matrix units (see the module
    docstring): only for int8/int4 weights with float32 activations on the CPU, by the CPU's
    features or AMX_PROMPTS_ENV. tiles: whether qwenchat's kernel may use them here (a compiler
    too old for AMX, or Linux refusing the tiles, leaves only its plain loops: forced only)."""
    if placement.device.type != "cpu" or placement.dtype != torch.float32 or quantize == "none":
        return False
    chosen = env_switch(AMX_PROMPTS_ENV, "float32 prompt products", "the matrix units' numerics", environ)
    return (tiles and cpu_has_matrix_units()) if chosen is None else chosen


def env_switch(name: str, off: str, on: str, environ: Mapping[str, str] | None = None) -> bool | None:
    """An environment switch: "0" False, "1" True, unset None; anything else a clear error naming
    what each value does (`off`, `on`)."""
    raw = (os.environ if environ is None else environ).get(name, "").strip()
    if raw in ("0", "1"):
        return raw == "1"
    if raw:
        raise SettingsError(f"{name}={raw!r} is not 0 or 1", f"set {name}=0 ({off}) or 1 ({on}), or unset it")
    return None


def cpu_has_matrix_units() -> bool:
    """AMX tiles with int8 and bfloat16, as torch's cpuinfo reads the CPU's flags (our kernel asks
    Linux for the tiles itself, and oneDNN for its bfloat16 products). Any failure of the probe
    means no."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    try:
        found = capabilities() if capabilities else {}
        return bool(found.get("amx_int8") and found.get("amx_bf16"))
    except Exception:  # noqa: BLE001 - a feature probe: any failure means the plain path
        return False


def _device(requested: str) -> tuple[torch.device, str]:
    req = requested.strip().lower()
    if req == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda"), f"CUDA GPU found ({torch.cuda.get_device_name(0)})"
        if _mps_available():
            return torch.device("mps"), "Apple GPU (MPS) found"
        return torch.device("cpu"), "no GPU found, running on the CPU"
    if req == "cpu":
        return torch.device("cpu"), "CPU requested"
    if req == "cuda" or req.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise SettingsError(
                f"device {requested!r} requested, but this torch build sees no CUDA GPU",
                "use --device auto or cpu, or install a CUDA build of torch",
            )
        try:
            dev = torch.device(req)
        except RuntimeError as e:
            raise SettingsError(f"invalid device {requested!r}: {e}", "use cuda or cuda:N") from e
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SettingsError(
                f"device {requested!r} requested, but only {torch.cuda.device_count()} CUDA device(s) exist",
                f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}",
            )
        return dev, f"{req} requested"
    if req == "mps":
        if not _mps_available():
            raise SettingsError("device 'mps' requested, but MPS is not available", "use --device auto or cpu")
        return torch.device("mps"), "MPS requested"
    raise SettingsError(f"unknown device {requested!r}", "use one of: auto, cpu, cuda, cuda:N, mps")


def _dtype(device: torch.device, requested: str) -> tuple[torch.dtype, str]:
    req = requested.strip().lower()
    if req != "auto":
        if req not in DTYPES:
            raise SettingsError(
                f"unknown dtype {requested!r}", "use one of: auto, float32, bfloat16, float16 (fp32, bf16, fp16)"
            )
        return DTYPES[req], f"{DTYPE_NAMES[DTYPES[req]]} requested"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "bfloat16 on CUDA"
        return torch.float16, "float16 (this GPU lacks bfloat16)"
    if device.type == "mps":
        return torch.float16, "float16 on MPS"
    return torch.float32, "float32 on CPU (bfloat16 matrix products are slow on most CPUs)"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())
