"""Which device a command runs on and in what precision: below every stage that computes."""

from __future__ import annotations

import contextlib
import logging

import torch

from competition.errors import CompeteError
from competition.settings.choices import PRECISIONS

log = logging.getLogger(__name__)


def pick_device(requested: str | None = None) -> torch.device:
    """The device to compute on: --device (cpu, cuda, cuda:N) checked against this machine, else
    the GPU when there is one."""
    if not requested:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise CompeteError(f"--device must be cpu, cuda or cuda:N, not {requested!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CompeteError("--device cuda: no CUDA device here; use --device cpu (or leave --device out)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise CompeteError(f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def autocast_dtype(precision: str, bf16_supported: bool) -> torch.dtype | None:
    """The CUDA autocast type of a --precision; None: float32 throughout. auto: bf16 where the GPU
    computes it natively (fp16's range can overflow without a loss scaler), else fp16 (with the
    scaler training already uses)."""
    if precision not in PRECISIONS:
        raise CompeteError(f"--precision must be one of {', '.join(PRECISIONS)}, not '{precision}'")
    if precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if bf16_supported else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


def half_precision_on(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast type `device` computes in under --precision: None off CUDA, whatever it says."""
    if device.type != "cuda":
        autocast_dtype(precision, False)  # still refuses an unknown name
        return None
    return autocast_dtype(precision, native_bf16(device))


def native_bf16(device: torch.device) -> bool:
    """bf16 in hardware: compute capability 8.0 (Ampere) on. torch.cuda.is_bf16_supported() also
    counts emulation, so a T4 (7.5) or P100 (6.0) would run bf16 convolutions without cuDNN,
    several times slower than fp16."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def half_name(device: torch.device, precision: str) -> str:
    """`half_precision_on` by name, as a cache key spells it: bfloat16, float16, or "" (float32)."""
    dtype = half_precision_on(device, precision)
    return str(dtype).removeprefix("torch.") if dtype is not None else ""


def autocast_as(half: str):
    """CUDA autocast to a half type named by `half_name` ("": float32, no autocast)."""
    return torch.autocast("cuda", dtype=getattr(torch, half)) if half else contextlib.nullcontext()


def autocast_for(device: torch.device, precision: str = "auto"):
    """Mixed precision on CUDA as --precision says; plain float32 on CPU, whatever it says."""
    return autocast_as(half_name(device, precision))


def compiled(module: torch.nn.Module, device: torch.device, wanted: bool) -> torch.nn.Module:
    """`module` through torch.compile when asked and on CUDA (where it pays back its compile time);
    on another device the module as it is, with a note."""
    if not wanted:
        return module
    if device.type != "cuda":
        log.warning("--compile: no-op on %s (torch.compile pays back its compile time on CUDA)", device.type)
        return module
    if (capability := torch.cuda.get_device_capability(device)) < TRITON_FROM:
        log.warning("--compile: skipped: Triton needs compute capability 7.0, this GPU has %d.%d", *capability)
        return module
    from torch import _dynamo

    _dynamo.config.suppress_errors = True  # a graph that fails to compile runs eagerly, with torch's warning
    # dynamic left to torch: a batch of a new shape (aspect batches) recompiles once with that size
    # symbolic (automatic dynamic shapes), not once per shape; dynamic=True would slow the square batches
    return torch.compile(module)


TRITON_FROM = (7, 0)  # torch.compile's GPU code generator refuses older cards (P100 is 6.0)


# A CPU embeds fastest in small batches (2 cores, efficientnet_lite0, scripts/bench_embed.py):
# square 224 px 61 images/s in batches of 8 vs 31 in batches of 32; aspect 384 px 20-32 in
# batches of 1-4 vs 16-23 in 8 or 32. So a CPU batch holds about 8 squares of 224 px.
CPU_BATCH_PIXELS = 8 * 224 * 224


def batch_for(device: torch.device, batch_size: int, largest_side: int) -> int:
    """Photos per forward pass: `batch_size` on CUDA, fewer on a CPU for large views."""
    return batch_size if device.type == "cuda" else max(1, min(batch_size, CPU_BATCH_PIXELS // largest_side**2))
