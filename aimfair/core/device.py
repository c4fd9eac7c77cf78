"""Which device and number format a computation runs on: CPU threads, CUDA or MPS, float32 or bfloat16."""

from __future__ import annotations

import torch

from aimfair.core.errors import AimfairError


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto": bfloat16 where the hardware computes it natively (CUDA with bf16, CPUs with AMX or
    AVX512-BF16), else float32. Explicit "float32" or "bfloat16" are taken as given."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "bfloat16"
    return "float32"


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" picks cuda, then mps, then cpu; anything else is passed to torch.device."""
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise AimfairError(f"device {name!r} is not available here (torch sees {torch.cuda.device_count()} CUDA "
                           "device(s)): use device: auto or cpu")
    if device.type == "mps" and not mps:
        raise AimfairError(f"device {name!r} is not available here: use device: auto or cpu")
    return device


def setup_torch(threads: int, device: str) -> torch.device:
    """Set torch's CPU threads (0 keeps torch's default) and resolve the device name."""
    if threads > 0:
        torch.set_num_threads(threads)
    return resolve_device(device)
