"""A padding-free row's causal attention, forward and backward, by two kernels, side by side.

    python bench/attention_kernels.py [--batch 8] [--rounds 3] [--reps 5]

The row is one batch of bench/throughput.py's DialogSum examples as tunelab packs it (training.padding_free), with
SmolLM2-135M's attention shape (9 query heads, 3 key-value heads, head size 64), random inputs. Per example it
attends either through tunelab's CPU operator (training/packing.py: sdpa's causal flash-attention kernel, which
skips the masked half) or through tunelab's matmul attention (training/attention.py: batched products over the
whole square, scores and softmax in fp32); bf16 inputs also through the flash kernel in fp32 (cast up, the output
rounded back). Reported: milliseconds per layer (median over interleaved rounds) and
their ratio, in fp32 and bf16. Writes bench/results/attention_kernels.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from itertools import pairwise
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import throughput  # noqa: E402  (bench/, the script's folder)

from tunelab.data import PromptEncoder, TemplateSet  # noqa: E402
from tunelab.data.encoding import encode_training_set  # noqa: E402
from tunelab.environment import describe_environment  # noqa: E402
from tunelab.io import atomic_write_text  # noqa: E402
from tunelab.training.attention import matmul_causal_attention  # noqa: E402
from tunelab.training.packing import _by_example, example_bounds  # noqa: E402

HEADS, KV_HEADS, HEAD_DIM = 9, 3, 64


class _Attention(torch.nn.Module):  # what matmul attention reads off the module: train mode, causal
    is_causal = True


def row_lengths(batch: int) -> list[int]:
    enc = PromptEncoder(throughput.smol_tokenizer(), "causal", True, 320, 64)
    exs = throughput.examples(batch)
    return [
        len(e.input_ids) for e in encode_training_set(enc, exs, [TemplateSet("dialogue_summarization").eval] * batch)
    ]


def layer_seconds(kind: str, dtype: torch.dtype, lengths: list[int], reps: int) -> float:
    """Median seconds of one layer's attention forward and backward over the packed row."""
    n = sum(lengths)
    positions = torch.cat([torch.arange(length) for length in lengths]).view(1, n)
    q = torch.randn(1, HEADS, n, HEAD_DIM, dtype=dtype, requires_grad=True)
    k = torch.randn(1, KV_HEADS, n, HEAD_DIM, dtype=dtype, requires_grad=True)
    v = torch.randn(1, KV_HEADS, n, HEAD_DIM, dtype=dtype, requires_grad=True)
    module = _Attention().train()
    bounds = list(pairwise(example_bounds(positions)))

    def step() -> None:
        if kind == "flash":
            out, _ = _by_example(q, k, v, positions, HEAD_DIM**-0.5)
        elif kind == "flash_fp32":  # bf16 inputs through the kernel's fp32 path, the output rounded back
            out = _by_example(q.float(), k.float(), v.float(), positions, HEAD_DIM**-0.5)[0].to(dtype)
        else:
            pieces = [
                matmul_causal_attention(module, q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], None)[0] for s, e in bounds
            ]
            out = torch.cat(pieces, dim=1)
        out.float().sum().backward()

    step()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "attention_kernels.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    lengths = row_lengths(args.batch)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        kinds = ("flash", "matmul") if dtype == torch.float32 else ("flash", "matmul", "flash_fp32")
        seconds: dict[str, list[float]] = {kind: [] for kind in kinds}
        for _ in range(args.rounds):
            for kind in seconds:
                seconds[kind].append(layer_seconds(kind, dtype, lengths, args.reps))
        median = {k: statistics.median(v) for k, v in seconds.items()}
        rows.append(
            {
                "dtype": str(dtype).removeprefix("torch."),
                "ms_per_layer": {k: 1e3 * m for k, m in median.items()},
                "over_flash": {k: m / median["flash"] for k, m in median.items()},
                "spread": {k: (max(v) - min(v)) / median[k] for k, v in seconds.items()},
            }
        )
        times = ", ".join(f"{k} {1e3 * m:.1f} ms ({m / median['flash']:.2f}x)" for k, m in median.items())
        print(f"{rows[-1]['dtype']}, a layer's attention forward and backward: {times}")
    out = {
        "date": time.strftime("%Y-%m-%d"),
        "environment": describe_environment(torch.device("cpu")),
        "lengths": lengths,
        "rows": rows,
    }
    atomic_write_text(args.out, json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
