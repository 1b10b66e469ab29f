"""Where a training step's time goes: one step of tunelab's loss, backward and fused AdamW, profiled by operator.

    python bench/profile_step.py [--arch seq2seq] [--method full] [--precision fp32] [--compile off,on] [--batch 4]
                                 [--attn sdpa,eager] [--dropout 0.0] [--padding-free]

The models and examples of bench/throughput.py (SmolLM2-135M-Instruct; a random T5 of flan-t5-small's shape), in
train mode (dropout on, as both sides of the throughput bench train), one batch of DialogSum training examples as
tunelab collates it, two warm-up steps, then one timed step and one profiled step (torch.profiler, CPU). The
operators' self time is grouped (matrix products, attention kernels, dropout's random masks, the embedding's dense
gradient, the optimizer, inductor's compiled graphs, the rest), so the share of the step spent outside the matrix
products, the part that faster code can remove, is read off directly. The matrix products' own rate (the
profiler's FLOP count over their time) is set against the GEMM peak measured in the same run (bench/throughput.py's
2048^3 product), which bounds what any change short of computing less can gain. Writes bench/results/profile_step.json.
This is the step's arithmetic, not the whole training loop (frozen-weight rounding, logging and data loading are
not in it). `--dropout` sets every dropout rate of the model (T5's are 0.1, SmolLM2's 0.0), to see what the
random masks cost.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import throughput  # noqa: E402  (bench/, the script's folder)

import tunelab  # noqa: E402

from tunelab.data import PromptEncoder, TemplateSet  # noqa: E402
from tunelab.data.collate import TrainCollator  # noqa: E402
from tunelab.data.encoding import encode_training_set  # noqa: E402
from tunelab.environment import describe_environment  # noqa: E402
from tunelab.io import atomic_write_text  # noqa: E402
from tunelab.methods import ModelContext, get_method  # noqa: E402
from tunelab.training.compiling import compiled_for_training  # noqa: E402
from tunelab.training.loss import completion_loss  # noqa: E402
from tunelab.training.packing import padding_free_attention  # noqa: E402

GROUPS = {  # operator name fragments, first match wins
    "matrix products": ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::linear"),
    "attention kernels": ("scaled_dot_product", "flash_attention", "causal_attention_by_example"),
    "dropout masks": ("bernoulli",),
    "embedding gradient": ("embedding_dense_backward", "embedding_backward"),
    "optimizer": ("adamw", "zero_grad"),
    "compiled graphs": ("CompiledFxGraph",),
}


def group_of(name: str) -> str:
    lowered = name.lower()
    return next((g for g, keys in GROUPS.items() if any(k.lower() in lowered for k in keys)), "other")


def set_dropout(model: torch.nn.Module, rate: float) -> None:
    """Every dropout of the model at `rate`: its Dropout modules and the attention's own rate (an attribute)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = rate
        elif isinstance(getattr(module, "dropout", None), float):
            module.dropout = rate


def profile(
    arch: str,
    method: str,
    precision: str,
    compiled: bool,
    batch_size: int,
    attn: str,
    dropout: float | None = None,
    padding_free: bool = False,
) -> dict:
    tok = throughput.smol_tokenizer()
    model = throughput.make_model(arch).train()
    if dropout is not None:
        set_dropout(model, dropout)
    if attn != "default":
        model.set_attn_implementation(attn)
    settings = tunelab.build_config({"method": {"name": "full"} if method == "full" else throughput.LORA}).method
    model = get_method(method).prepare(model, settings, ModelContext(arch, "", ""))
    enc = PromptEncoder(tok, arch, arch == "causal", 320, 64)
    exs = throughput.examples(batch_size)
    train = encode_training_set(enc, exs, [TemplateSet("dialogue_summarization").eval] * len(exs))
    batch = TrainCollator(tok.pad_token_id, arch, padding_free)(train)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-5, fused=True)
    run = compiled_for_training(model) if compiled else model

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = completion_loss(run, batch, arch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with padding_free_attention(model, padding_free):
        for _ in range(2):
            step()
        start = time.perf_counter()
        step()
        seconds = time.perf_counter() - start
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_flops=True) as prof:
            step()
    by_group: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        by_group[group_of(event.key)] += event.self_cpu_time_total
    total = sum(by_group.values())
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    matrix = [e for e in events if group_of(e.key) == "matrix products"]
    matrix_flops = sum(e.flops for e in matrix)
    matrix_seconds = sum(e.self_cpu_time_total for e in matrix) / 1e6
    return {
        "arch": arch,
        "method": method,
        "precision": precision,
        "compiled": compiled,
        "attn": attn,
        "dropout": dropout,
        "padding_free": padding_free,
        "batch_shape": {k: list(v.shape) for k, v in batch.items()},
        "step_seconds": seconds,
        "shares": {g: by_group[g] / total for g in sorted(by_group, key=by_group.get, reverse=True)},
        # the matrix products' own rate (their FLOPs over their self time), to hold against the GEMM peak
        "matrix_tflops": matrix_flops / 1e12,
        "matrix_tflops_per_s": matrix_flops / matrix_seconds / 1e12,
        "top_operators": {e.key: e.self_cpu_time_total / total for e in events[:15]},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="seq2seq", choices=["causal", "seq2seq"])
    ap.add_argument("--method", default="full", choices=["full", "lora"])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--compile", default="off,on", help="off, on or both")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--attn", default="default", help="attention implementations, comma-separated (sdpa, eager)")
    ap.add_argument("--dropout", type=float, default=None, help="every dropout rate of the model (default: its own)")
    ap.add_argument(
        "--padding-free", action="store_true", help="causal: pack the batch into one row (training.padding_free)"
    )
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "profile_step.json"))
    args = ap.parse_args()
    rows = [
        profile(
            args.arch, args.method, args.precision, setting == "on", args.batch, attn, args.dropout, args.padding_free
        )
        for attn in args.attn.split(",")
        for setting in args.compile.split(",")
    ]
    for r in rows:
        shares = ", ".join(f"{g} {100 * s:.1f}%" for g, s in r["shares"].items())
        print(
            f"{r['arch']} {r['method']} {r['precision']} compiled={r['compiled']} attention={r['attn']}: "
            f"{r['step_seconds']:.2f} s; {shares}; matrix products {r['matrix_tflops']:.2f} TFLOP at "
            f"{r['matrix_tflops_per_s']:.3f} TFLOP/s"
        )
    peak = throughput.gemm_peaks()[args.precision]
    for r in rows:
        r["matrix_share_of_peak"] = r["matrix_tflops_per_s"] * 1e12 / peak
        print(f"  matrix products at {100 * r['matrix_share_of_peak']:.0f}% of the {peak / 1e12:.3f} TFLOP/s GEMM peak")
    out = {
        "date": time.strftime("%Y-%m-%d"),
        "environment": describe_environment(torch.device("cpu")),
        "gemm_peak_tflops": peak / 1e12,
        "rows": rows,
    }
    atomic_write_text(args.out, json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
