"""Training with and without `training.compile` (or another on/off setting), side by side, through tunelab's own
training loop.

SmolLM2-135M-Instruct on the demo's training data and settings (DialogSum training dialogues, batch 8, inputs cut
at 320 tokens, summaries at 64; precision and gradient checkpointing `auto`, as the demo trains), a different
length-grouped batch every step. Each (method, setting) pair runs in its own process (peak RSS is a per-process
high-water mark); the pairs are interleaved over `--repeats` rounds. Per run: the seconds of each optimizer
step, so the compilation's cost (the first steps) and the steady step time (the median of the later steps) are
both visible, the whole run's seconds, peak RSS and the logged losses.

    python bench/compile.py [--methods full,lora,prompt_tuning] [--steps 12] [--repeats 1] [--precision auto]
    python bench/compile.py --setting matmul_attention --methods full,lora --out bench/results/attention.json

`--setting matmul_attention` compares `training.matmul_attention` off and on, both compiled (tunelab's default for
real runs). `--arch seq2seq` trains a random T5 of flan-t5-small's shape (its own dropout, 0.1; SmolLM2's tokenizer,
as bench/throughput.py does) instead, e.g. `--arch seq2seq --setting fast_dropout --methods full,lora`.
`--setting padding_free` compares padded and padding-free causal batches; `--examples N --batch B` change the data
(400 examples, batch 8 by default) and `--ungrouped` draws random batches (`group_by_length: false`). Prints a
Markdown table (bench/results/compile.md, attention.md, dropout.md) and writes the JSON (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

METHODS = {
    "full": ({"name": "full"}, 3e-5),
    "lora": ({"name": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}, 5e-4),
    "prompt_tuning": ({"name": "prompt_tuning", "num_virtual_tokens": 20, "init": "text"}, 3e-2),
}
MODEL_NAMES = {"causal": "SmolLM2-135M-Instruct", "seq2seq": "T5 of flan-t5-small's shape (random, dropout 0.1)"}
STEADY_FROM = 4  # steps before this one may still compile (the first shape, then the dynamic recompile)


def worker(
    method: str,
    setting: str,
    on: bool,
    steps: int,
    precision: str,
    arch: str,
    examples_n: int,
    batch: int,
    ungrouped: bool = False,
) -> dict:
    import torch

    import tunelab
    import tunelab.training.loop as loop
    from tunelab.data.encoding import PromptEncoder, encode_training_set
    from tunelab.data.sources import load_split
    from tunelab.data.templates import TemplateSet
    from tunelab.methods import ModelContext, get_method
    from tunelab.models import load_model
    from tunelab.training.loop import train_model

    method_cfg, lr = METHODS[method]
    cfg = tunelab.build_config(
        {
            "method": method_cfg,
            "data": {"max_train_samples": examples_n},
            "training": {
                "max_steps": steps,
                "batch_size": batch,
                "group_by_length": not ungrouped,
                "lr": lr,
                "warmup_ratio": 0.1,
                "scheduler": "cosine",
                "log_every": 1,
                "precision": precision,
                "compile": True,
                setting: on,
            },
        }
    )
    m = get_method(method)
    ts = TemplateSet("dialogue_summarization")
    if arch == "causal":
        loaded = load_model(cfg.model, device=torch.device("cpu"), extra_kwargs=m.load_kwargs(cfg.method))
        tokenizer, base, source, chat = loaded.tokenizer, loaded.model, loaded.source.path, loaded.use_chat_template
    else:
        import throughput  # bench/, the script's folder

        tokenizer, base, source, chat = throughput.smol_tokenizer(), throughput.make_model("seq2seq"), "", False
    encoder = PromptEncoder(tokenizer, arch, chat, 320, 64)
    examples = load_split(cfg.data, "train")[:examples_n]
    train = encode_training_set(encoder, examples, ts.for_training(len(examples), cfg.seed))
    model = m.prepare(base, cfg.method, ModelContext(arch, source, ts.eval.instruction))
    stamps: list[float] = []
    real = loop.completion_loss

    def timed(model_, batch_, arch_):  # a time stamp at each micro-batch's start
        stamps.append(time.perf_counter())
        return real(model_, batch_, arch_)

    loop.completion_loss = timed
    start = time.perf_counter()
    result = train_model(model, tokenizer, arch, train, None, cfg.training, seed=cfg.seed,
                         device=torch.device("cpu"), show_progress=False)  # fmt: skip
    end = time.perf_counter()
    step_seconds = [b - a for a, b in zip(stamps, [*stamps[1:], end])]
    return {
        "method": method,
        "setting": setting,
        "on": on,
        "compiled": result.compiled,
        "matmul_attention": result.matmul_attention,
        "fast_dropout": result.fast_dropout,
        "padding_free": result.padding_free,
        "padded_tokens": result.padded_tokens,
        "gradient_checkpointing": result.gradient_checkpointing,
        "precision": result.precision,
        "steps": result.steps,
        "seconds": end - start,
        "step_seconds": step_seconds,
        "steady_step_seconds": statistics.median(step_seconds[STEADY_FROM - 1 :]),
        "losses": [loss for _, loss in result.train_loss],
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "completion_tokens": result.completion_tokens,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--precision", default="auto")
    ap.add_argument(
        "--setting", default="compile", choices=["compile", "matmul_attention", "fast_dropout", "padding_free"]
    )
    ap.add_argument("--arch", default="causal", choices=["causal", "seq2seq"])
    ap.add_argument("--examples", type=int, default=400, help="training examples batches are drawn from")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ungrouped", action="store_true", help="training.group_by_length: false (random batches)")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "compile.json"))
    args = ap.parse_args()
    if args.worker:
        method, on = args.worker
        print(
            json.dumps(
                worker(
                    method,
                    args.setting,
                    on == "on",
                    args.steps,
                    args.precision,
                    args.arch,
                    args.examples,
                    args.batch,
                    args.ungrouped,
                )
            )
        )
        return
    rows = []
    for repeat in range(args.repeats):
        for method in args.methods.split(","):
            for on in ("off", "on"):
                cmd = [sys.executable, __file__, "--worker", method, on, "--steps", str(args.steps)]
                cmd += ["--precision", args.precision, "--setting", args.setting, "--arch", args.arch]
                cmd += ["--examples", str(args.examples), "--batch", str(args.batch)]
                cmd += ["--ungrouped"] if args.ungrouped else []
                proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
                if proc.returncode != 0:
                    sys.exit(f"{method} {args.setting} {on} failed:\n{proc.stderr[-3000:]}")
                rows.append({**json.loads(proc.stdout.strip().splitlines()[-1]), "repeat": repeat})
                r = rows[-1]
                print(f"  {method} {args.setting} {on} (round {repeat + 1}): {r['seconds']:.1f} s", file=sys.stderr)
    import torch

    from tunelab.environment import describe_environment

    env = describe_environment(torch.device("cpu"))
    print(
        f"\n{MODEL_NAMES[args.arch]}, {rows[0]['steps']} optimizer steps of batch {args.batch} (DialogSum, "
        f"{args.examples} examples{', random batches' if args.ungrouped else ''}, inputs <= 320 tokens), "
        f"precision {rows[0]['precision']}; {env['cpu']['model']} ({', '.join(env['cpu']['isa'])}), "
        f"{env['torch_threads']} threads, torch {torch.__version__}; steady step = median of steps "
        f"{STEADY_FROM}-{rows[0]['steps']}; medians over {args.repeats} round(s)\n"
    )
    print(
        f"| method | checkpointing | {args.setting} | steps 1-3 s | steady step s | steady step / off | whole run s | "
        "whole run / off | peak RSS GiB | peak / off | largest loss difference |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    summary = []
    for method in args.methods.split(","):
        by_setting = {}
        for on in (False, True):
            runs = [r for r in rows if r["method"] == method and r["on"] is on]
            by_setting[on] = {
                "first": statistics.median(sum(r["step_seconds"][: STEADY_FROM - 1]) for r in runs),
                "steady": statistics.median(r["steady_step_seconds"] for r in runs),
                "whole": statistics.median(r["seconds"] for r in runs),
                "peak": statistics.median(r["peak_rss_bytes"] for r in runs),
                "losses": runs[0]["losses"],
                "checkpointing": runs[0]["gradient_checkpointing"],
            }
        off = by_setting[False]
        for on, s in by_setting.items():
            difference = max(abs(a - b) for a, b in zip(s["losses"], off["losses"]))
            print(
                f"| {method} | {'on' if s['checkpointing'] else 'off'} | {'on' if on else 'off'} | "
                f"{s['first']:.1f} | {s['steady']:.2f} | {s['steady'] / off['steady']:.2f} | {s['whole']:.1f} | "
                f"{s['whole'] / off['whole']:.2f} | {s['peak'] / 2**30:.2f} | {s['peak'] / off['peak']:.2f} | "
                f"{difference:.4f} |"
            )
            summary.append({"method": method, args.setting: on, **s})
    Path(args.out).write_text(
        json.dumps(
            {"date": time.strftime("%Y-%m-%d"), "environment": env, "arch": args.arch, "setting": args.setting,
             "steps": args.steps, "examples": args.examples, "batch_size": args.batch, "grouped": not args.ungrouped,
             "rows": rows, "summary": summary},
            indent=2,
        )
    )  # fmt: skip


if __name__ == "__main__":
    main()
