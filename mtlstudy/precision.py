"""Where a run computes and in which number formats: the device (a GPU asked for and not usable
is an error, never a CPU run), the autocast dtype of training and of evaluation, the fp16 loss
scaler, TF32 matmuls on CUDA, and the GPU's name for the record. docs/gpu.md gives the reasons.
"""
from __future__ import annotations

import contextlib
import os
import warnings

import torch

from .errors import TrainingError
from .spec import RunSpec


def what_torch_sees() -> str:
    """torch's version, its CUDA build, the GPUs it can use and CUDA_VISIBLE_DEVICES, in words."""
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU only"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return (f"torch {torch.__version__} ({build}) sees {seen} usable GPU{'s' * (seen != 1)}"
            + (f", CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""))


def pick_device(setting: str) -> torch.device:
    """`auto`: the GPU if torch sees one, else the CPU. A GPU named (`cuda`, `cuda:N`) must be
    usable: otherwise a one-line error naming what was asked and what torch sees."""
    if setting == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.version.cuda:  # a CUDA build that sees no GPU: a driver or wheel mismatch, most often
            warnings.warn(f"train.device 'auto': {what_torch_sees()}: this run trains on the CPU")
        return torch.device("cpu")
    try:
        device = torch.device(setting)
    except RuntimeError as e:
        raise TrainingError(f"train.device '{setting}': not a device ({str(e).splitlines()[0]})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError(f"train.device '{setting}': asked for a CUDA GPU, but {what_torch_sees()}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise TrainingError(f"train.device '{setting}': no such GPU, {what_torch_sees()}")
    return device


def gpu_name(device: torch.device) -> str | None:
    """The GPU's name for the record (None off CUDA)."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else None


def cpu_computes_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic in hardware (AMX or AVX-512 BF16). Elsewhere torch
    emulates it: bf16 autocast trained 13-17x and evaluated 5-6x slower than fp32 on an AMD EPYC
    with AVX2 only (BENCHMARKS.md). AVX-512 BF16 without AMX is counted as hardware bf16 unmeasured:
    no such CPU was at hand."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def gpu_computes_bf16(device: torch.device) -> bool:
    """Native bf16 on this GPU: compute capability 8.0 or later (Ampere on). Older GPUs (V100, T4)
    emulate it, which `torch.cuda.is_bf16_supported()` counts as support."""
    return torch.cuda.get_device_capability(device)[0] >= 8


def autocast_dtype(precision: str, device: torch.device, multitask: bool = False):
    """The autocast dtype, None for fp32. `auto` is bf16 on a GPU that computes it natively, fp16
    on an older one, and fp32 on CPU; `bf16` is honoured where bf16 is native (a GPU of compute
    capability 8 or later, a CPU with AMX or AVX-512 BF16) and otherwise falls back, with a
    warning, to fp16 on a GPU and fp32 on a CPU; `bf16_one_task` is bf16 for runs that train one
    task and fp32 for multi-task runs."""
    if precision == "bf16_one_task":
        precision = "fp32" if multitask else "bf16"
    if precision == "fp16" and device.type != "cuda":
        raise TrainingError(f"train.precision 'fp16' needs a CUDA GPU (device here: {device.type}); "
                            "use bf16 or fp32")
    if precision == "fp32" or device.type not in ("cuda", "cpu"):
        return None
    if device.type == "cpu":
        if precision != "bf16":
            return None
        if not cpu_computes_bf16():
            warnings.warn("bf16 asked for on a CPU without AMX or AVX-512 BF16, which would emulate it "
                          "(5-17x slower than fp32): this run trains and evaluates in fp32")
            return None
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if not gpu_computes_bf16(device):
        if precision == "bf16":
            warnings.warn("bf16 asked for on a GPU without native bf16 (compute capability < 8): "
                          "this run trains in fp16 with a loss scaler")
        return torch.float16
    return torch.bfloat16


def run_autocast_dtype(spec: RunSpec, device: torch.device):
    """The run's autocast dtype: `bf16_one_task` depends on whether it trains several tasks."""
    return autocast_dtype(spec.train.precision, device, multitask=spec.multitask)


def run_eval_autocast_dtype(spec: RunSpec, device: torch.device):
    """The autocast dtype of the run's dev evaluations: the training's unless `eval_precision: bf16`."""
    if spec.train.eval_precision == "bf16":
        return autocast_dtype("bf16", device)
    return run_autocast_dtype(spec, device)


def make_scaler(amp, device: torch.device):
    """fp16 needs a loss scaler (on the run's own device type); bf16 and fp32 do not."""
    return torch.amp.GradScaler(device.type) if amp == torch.float16 else None


def allow_tf32(device: torch.device) -> None:
    """fp32 matmuls and convolutions on CUDA in TF32 (the current API, not the legacy flags)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"


def autocast(device: torch.device, amp):
    """The autocast context of a forward pass (none for fp32)."""
    return torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
