"""Model FLOPs utilisation (MFU), one formula for every benchmark here.

Training FLOPs are counted on real (non-pad) tokens; per example of L tokens:
    6 x P_layers x L + 12 x layers x hidden x L^2 + 6 x P_head
(P_layers: the transformer layers' parameters; the L^2 term: attention scores and weighted sum,
forward + backward; P_head: pooler + classifier, once per example). MFU divides the FLOPs by the
time and by a peak: the measured throughput of one dense torch.matmul, or a GPU's datasheet peak.
"""
from __future__ import annotations

import re
import time

import numpy as np
import torch

MATMUL_N = 2048

# Dense tensor-core peaks (FLOP/s, no sparsity) from NVIDIA's datasheets, in the dtype a run
# computes in: bf16 on compute capability 8 and later, fp16 before (V100, T4 have no bf16 peak).
# Keys are matched as whole names in torch.cuda.get_device_name() ("NVIDIA L40" is not an "L4",
# "NVIDIA A10G" not an "A10"), longest first ("NVIDIA H100 NVL" is not the SXM "H100"). Cards
# not listed (the A10G among them: its tensor peak is not in a datasheet) get no datasheet MFU.
GPU_PEAKS = {
    "H200 NVL": {"bfloat16": 835e12, "float16": 835e12},
    "H200": {"bfloat16": 989e12, "float16": 989e12},            # SXM
    "H100 NVL": {"bfloat16": 835e12, "float16": 835e12},
    "H100 PCIe": {"bfloat16": 756e12, "float16": 756e12},
    "H100": {"bfloat16": 989e12, "float16": 989e12},            # SXM ("NVIDIA H100 80GB HBM3")
    "A100": {"bfloat16": 312e12, "float16": 312e12},
    "L40S": {"bfloat16": 362e12, "float16": 362e12},
    "L40": {"bfloat16": 181e12, "float16": 181e12},
    "L4": {"bfloat16": 121e12, "float16": 121e12},
    "A10": {"bfloat16": 125e12, "float16": 125e12},
    "V100-PCIE": {"float16": 112e12},
    "V100": {"float16": 125e12},                                # SXM2
    "T4": {"float16": 65e12},
}


def flop_model(encoder_model) -> dict:
    """Parameter counts that the FLOPs formula needs, from a MultiTaskModel or an HF model."""
    enc = getattr(encoder_model, "encoder", None) or getattr(encoder_model, "bert", None) or \
        getattr(encoder_model, "roberta", None) or encoder_model
    cfg = enc.config
    layers = sum(p.numel() for n, p in enc.named_parameters() if ".layer." in f".{n}")
    pooler = sum(p.numel() for n, p in enc.named_parameters() if n.startswith("pooler."))
    return {"layer_params": layers, "head_params": pooler + 2 * cfg.hidden_size,  # + 2-way classifier
            "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size}


def train_flops(lengths: np.ndarray, fm: dict) -> float:
    """Training FLOPs (forward + backward) of one pass over examples of these real lengths."""
    L = np.asarray(lengths, dtype=np.float64)
    return float(6 * fm["layer_params"] * L.sum() + 12 * fm["layers"] * fm["hidden"] * (L ** 2).sum()
                 + 6 * fm["head_params"] * len(L))


def matmul_flops_per_s(n: int = MATMUL_N, reps: int = 4, device: str = "cpu", dtype=torch.float32) -> float:
    """Dense torch.matmul throughput (FLOP/s) of two n x n matrices, best of `reps` after a warm-up."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    torch.matmul(a, b)
    sync()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.matmul(a, b)
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def datasheet_peak(device_name: str, dtype="bfloat16") -> float | None:
    """The card's dense tensor-core peak (FLOP/s) in `dtype` (a torch dtype or its name), or None
    for a card not in GPU_PEAKS or without a peak in that dtype. Names match whole, longest first."""
    dtype = str(dtype).replace("torch.", "")
    for key in sorted(GPU_PEAKS, key=len, reverse=True):
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(key)}(?![A-Za-z0-9])", device_name, re.IGNORECASE):
            return GPU_PEAKS[key].get(dtype)
    return None
