"""Causal training batches: left-padded with an attention mask (tunelab before) vs right-padded without one
(tunelab now, `data/collate.py`), side by side in one process on smollm2-135m-instruct.

    python bench/causal_padding.py [--precision bf16|fp32] [--repeats 3]

Same examples, same batches, forward + backward of `completion_loss`; reports each layout's median seconds, the
ratio and the largest difference of the per-batch losses. Writes bench/results/causal_padding.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import tunelab  # noqa: E402
from tunelab.data import PromptEncoder, TemplateSet  # noqa: E402
from tunelab.data.collate import TrainCollator, pad_sequences, padding_mask, position_ids_from_mask  # noqa: E402
from tunelab.data.encoding import IGNORE_INDEX, encode_training_set  # noqa: E402
from tunelab.io import atomic_write_text  # noqa: E402
from tunelab.data.sources import load_split  # noqa: E402
from tunelab.environment import describe_environment  # noqa: E402
from tunelab.methods import ModelContext, get_method  # noqa: E402
from tunelab.training.loss import completion_loss  # noqa: E402


def left_padded_with_mask(batch, pad_id: int) -> dict[str, torch.Tensor]:
    """The layout tunelab used before: completions end at the last column, padding masked out."""
    ids = [e.input_ids for e in batch]
    mask = padding_mask(ids, left=True)
    return {
        "input_ids": pad_sequences(ids, pad_id, left=True),
        "attention_mask": mask,
        "position_ids": position_ids_from_mask(mask),
        "labels": pad_sequences([e.labels for e in batch], IGNORE_INDEX, left=True),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--method", choices=["lora", "full"], default="lora")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tunelab.pull_model("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(path)
    cfg = tunelab.build_config({"method": {"name": args.method}})
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = get_method(args.method).prepare(model, cfg.method, ModelContext("causal", "", "")).train()
    examples = load_split(cfg.data, "train")[:16]
    enc = PromptEncoder(tok, "causal", True, 320, 64)
    train = sorted(
        encode_training_set(enc, examples, [TemplateSet("dialogue_summarization").eval] * 16),
        key=lambda e: len(e.input_ids),
    )
    groups = [train[i : i + 4] for i in range(0, 16, 4)]
    layouts = {
        "left-padded, attention mask": [left_padded_with_mask(g, tok.pad_token_id) for g in groups],
        "right-padded, no mask": [TrainCollator(tok.pad_token_id, "causal")(g) for g in groups],
    }

    def run(batches) -> tuple[float, list[float]]:
        losses, start = [], time.perf_counter()
        for b in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                loss = completion_loss(model, b, "causal")
            loss.backward()
            model.zero_grad()
            losses.append(loss.item())
        return time.perf_counter() - start, losses

    for batches in layouts.values():  # warm-up
        run(batches[:1])
    seconds: dict[str, list[float]] = {k: [] for k in layouts}
    losses: dict[str, list[float]] = {}
    for _ in range(args.repeats):  # interleaved
        for name, batches in layouts.items():
            t, losses[name] = run(batches)
            seconds[name].append(t)
    before, after = (statistics.median(v) for v in seconds.values())
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "method": args.method,
        "precision": args.precision,
        "seconds": seconds,
        "ratio_before_over_after": before / after,
        "max_loss_difference": max(abs(a - b) for a, b in zip(*losses.values())),
        "environment": describe_environment(torch.device("cpu")),
    }
    print(
        f"{args.method} {args.precision}: left+mask {before:.2f} s, right no-mask {after:.2f} s, "
        f"{result['ratio_before_over_after']:.2f}x; largest loss difference {result['max_loss_difference']:.1e}"
    )
    out = Path(__file__).parent / "results" / "causal_padding.json"
    kept = json.loads(out.read_text()) if out.exists() else {}
    kept[f"{args.method} {args.precision}"] = result
    atomic_write_text(out, json.dumps(kept, indent=2))


if __name__ == "__main__":
    main()
