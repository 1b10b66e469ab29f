"""Matrix-product throughput at SmolLM2-135M's training shapes against the square product the MFU peak uses.

    python bench/gemm_shapes.py

A training step of batch 4 x ~350 tokens multiplies 1400 x 576 activations by 576-wide weights; if such products
ran far below the 2048 x 2048 peak, a low MFU would be the hardware's, not the step's. Prints TFLOP/s per shape
in fp32 and bf16 and writes bench/results/gemm_shapes.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

TOKENS = 4 * 350
SHAPES = {  # (m, k, n) of m x k @ k x n
    "square 2048 (the MFU peak)": (2048, 2048, 2048),
    "q/o projection, 576 -> 576": (TOKENS, 576, 576),
    "k/v projection, 576 -> 192": (TOKENS, 576, 192),
    "MLP up/gate, 576 -> 1536": (TOKENS, 576, 1536),
    "MLP down, 1536 -> 576": (TOKENS, 1536, 576),
    "weight gradient, 576 x 1400 @ 1400 x 1536": (576, TOKENS, 1536),
}


def gemm_flops(m: int, k: int, n: int, dtype: torch.dtype, reps: int = 20, warmup: int = 3) -> float:
    """FLOP/s of an m x k @ k x n product (also the MFU peak of bench/throughput.py, on a square)."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(warmup):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * m * k * n * reps / (time.perf_counter() - start)


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from tunelab.environment import describe_environment

    rows = []
    for name, (m, k, n) in SHAPES.items():
        row = {"shape": name, "mkn": [m, k, n], "fp32": gemm_flops(m, k, n, torch.float32) / 1e12}
        row["bf16"] = gemm_flops(m, k, n, torch.bfloat16) / 1e12
        rows.append(row)
        print(f"{name}: fp32 {row['fp32']:.3f}, bf16 {row['bf16']:.3f} TFLOP/s", flush=True)
    out = Path(__file__).parent / "results" / "gemm_shapes.json"
    payload = {
        "date": time.strftime("%Y-%m-%d"),
        "environment": describe_environment(torch.device("cpu")),
        "rows": rows,
    }
    out.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
