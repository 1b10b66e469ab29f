"""Does training with `training.fast_dropout` learn as training with torch's dropout does? Side by side, several
seeds each, so the difference between the two is read against the seed-to-seed spread of either.

A small T5 (4+4 layers, d_model 256, T5's own dropout 0.1, SmolLM2's tokenizer as no T5 tokenizer is available
offline; random weights, as no T5 weights are) is fine-tuned in full on DialogSum training dialogues through
tunelab's training loop (eager, fp32), and the validation loss is measured before and after:

    python bench/dropout_convergence.py [--seeds 0,1,2] [--steps 60] [--out bench/results/dropout_convergence.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from throughput import smol_tokenizer  # bench/, the script's folder

import tunelab
from tunelab.data import PromptEncoder, TemplateSet, TrainCollator
from tunelab.data.encoding import encode_training_set
from tunelab.data.sources import load_split
from tunelab.environment import describe_environment
from tunelab.training import evaluation_loss, train_model


def small_t5(tokenizer, seed: int) -> torch.nn.Module:
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(tokenizer), d_model=256, d_kv=32, d_ff=512, num_layers=4, num_decoder_layers=4,
                      num_heads=8, dropout_rate=0.1, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id)  # fmt: skip
    return T5ForConditionalGeneration(config)


def run(fast: bool, seed: int, steps: int, train, held, tokenizer) -> dict:
    from torch.utils.data import DataLoader

    cfg = tunelab.build_config(
        {
            "method": {"name": "full"},
            "training": {"max_steps": steps, "batch_size": 8, "lr": 1e-3, "warmup_ratio": 0.1, "log_every": 10,
                         "precision": "fp32", "compile": False, "fast_dropout": fast},
        }
    )  # fmt: skip
    model = small_t5(tokenizer, seed)
    loader = DataLoader(held, batch_size=16, collate_fn=TrainCollator(tokenizer.pad_token_id, "seq2seq"))
    before = evaluation_loss(model, loader, "seq2seq")
    start = time.perf_counter()
    result = train_model(model, tokenizer, "seq2seq", train, None, cfg.training, seed=seed,
                         device=torch.device("cpu"), show_progress=False)  # fmt: skip
    seconds = time.perf_counter() - start
    return {
        "fast_dropout": result.fast_dropout,
        "seed": seed,
        "validation_loss_before": before,
        "validation_loss_after": evaluation_loss(model, loader, "seq2seq"),
        "train_loss": result.train_loss,
        "seconds": seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "dropout_convergence.json"))
    args = ap.parse_args()
    tokenizer = smol_tokenizer()
    data = tunelab.build_config({}).data
    encoder = PromptEncoder(tokenizer, "seq2seq", False, 256, 64)
    templates = TemplateSet("dialogue_summarization")
    train_examples = load_split(data, "train")[:480]
    train = encode_training_set(encoder, train_examples, templates.for_training(len(train_examples), 0))
    held_examples = load_split(data, "validation")[:64]
    held = encode_training_set(encoder, held_examples, [templates.eval] * len(held_examples))
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for fast in (False, True):  # interleaved
            rows.append(run(fast, seed, args.steps, train, held, tokenizer))
            r = rows[-1]
            print(f"  fast_dropout {fast} seed {seed}: validation loss {r['validation_loss_before']:.3f} -> "
                  f"{r['validation_loss_after']:.3f} ({r['seconds']:.0f} s)", file=sys.stderr)  # fmt: skip
    print(f"\nT5 (4+4 layers, d_model 256, dropout 0.1), full fine-tuning, {args.steps} steps of batch 8 on DialogSum "
          f"(inputs <= 256 tokens), fp32, eager; validation loss on 64 validation dialogues\n")  # fmt: skip
    print("| dropout masks | validation loss after, per seed | mean | spread (max - min) |")
    print("|---|---|---|---|")
    for fast in (False, True):
        after = [r["validation_loss_after"] for r in rows if r["fast_dropout"] is fast]
        label = "tunelab (`fast_dropout: true`)" if fast else "torch (`fast_dropout: false`)"
        print(f"| {label} | {', '.join(f'{x:.3f}' for x in after)} | {statistics.mean(after):.3f} | "
              f"{max(after) - min(after):.3f} |")  # fmt: skip
    Path(args.out).write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "environment": describe_environment(torch.device("cpu")),
                "steps": args.steps,
                "rows": rows,
            },
            indent=2,
        )  # fmt: skip
    )


if __name__ == "__main__":
    main()
