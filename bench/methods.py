"""Peak memory and step time of each fine-tuning method on smollm2-135m-instruct, side by side.

The demo's batch (8 DialogSum training dialogues, inputs cut at 320 tokens: 8 x 424 with the chat template and
summary) for every method; each method runs in its own process (peak RSS is a per-process high-water mark), one
warm-up step then timed steps, each followed by what tunelab's training loop does after a micro-batch on the CPU
(glibc: freed memory handed back with `malloc_trim`; mimalloc returns it itself after its purge delay). Each method
is measured as tunelab trains it by default (`training.gradient_checkpointing: auto`, decided per model and batch as training does; `training.compile: auto`,
decided as for a run of >= 20 steps: bitsandbytes' QLoRA base cannot be compiled) and with compilation off (eager),
each on tunelab's allocator (mimalloc, preloaded as the `tunelab` program does: tunelab/allocator.py) and on the C
library's (glibc). Prints ratios to full fine-tuning under the same settings and writes bench/results/methods.json.

    python bench/methods.py [--methods full,lora,qlora,prompt_tuning,ia3] [--checkpointing auto]
                            [--compile auto,off] [--allocator mimalloc,system] [--steps 3]
                            [--frozen-weights auto,fp32] [--loss auto,whole]

`--frozen-weights` and `--loss` measure two of tunelab's memory levers against their absence (the defaults measure
tunelab as it trains): a PEFT method's frozen weights in bf16 (training/frozen.py) and the loss projected a chunk
of completion tokens at a time (training/loss.py).

Peak RSS depends on the allocator: glibc keeps freed blocks in its heap, so the high-water mark also counts memory
that no tensor holds any more. `--return-freed-memory` runs the workers with a fixed MALLOC_MMAP_THRESHOLD_, so
freed tensors go back to the OS and peak RSS follows live memory; steps are much slower then (every large tensor
is a fresh, zeroed mapping), which is why tunelab does not set it (bench/results/memory_levers.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

METHOD_CONFIGS = {
    "full": {"name": "full"},
    "lora": {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
    "qlora": {
        "name": "qlora",
        "r": 16,
        "alpha": 32,
        "dropout": 0.0,
        "target_modules": "all-linear",
        "compute_dtype": "bfloat16",
    },
    "prompt_tuning": {"name": "prompt_tuning", "num_virtual_tokens": 20, "init": "text"},
    "ia3": {"name": "ia3"},
}


def worker(
    method: str,
    batch_size: int,
    steps: int,
    max_input_tokens: int,
    precision: str = "auto",
    checkpointing: str = "auto",
    attn: str = "auto",
    compile_setting: str = "auto",
    frozen_weights: str = "auto",
    loss_setting: str = "auto",
) -> dict:
    import torch

    import tunelab
    from tunelab.allocator import active_allocator
    from tunelab.data import PromptEncoder, TemplateSet, TrainCollator
    from tunelab.data.sources import load_split
    from tunelab.evaluation.costs import parameter_counts
    from tunelab.methods import ModelContext, get_method
    from tunelab.models import load_model, pick_device
    from tunelab.models.precision import autocast, autocast_dtype, resolve_precision
    from tunelab.training.compiling import AUTO_MIN_STEPS, compiled_for_training, decide_compile
    from tunelab.training.frozen import store_frozen_rounded
    from tunelab.training.loop import build_optimizer, enable_gradient_checkpointing
    from tunelab.training.loss import completion_loss
    from tunelab.training.memory import checkpointing_pays, release_freed_memory

    if loss_setting == "whole":  # every completion position's logits at once, as tunelab's loss did before chunking
        import tunelab.training.loss as loss_module

        loss_module._plain_head = lambda model: False

    cfg = tunelab.build_config({"method": METHOD_CONFIGS[method], "model": {"attn_implementation": attn}})
    device = pick_device()
    m = get_method(method)
    loaded = load_model(cfg.model, device=device, extra_kwargs=m.load_kwargs(cfg.method))
    ts = TemplateSet("dialogue_summarization")
    enc = PromptEncoder(loaded.tokenizer, "causal", loaded.use_chat_template, max_input_tokens, 64)
    examples = load_split(cfg.data, "train")[:batch_size]
    batch = TrainCollator(loaded.tokenizer.pad_token_id, "causal")(
        [enc.encode_for_training(ts.eval, ex) for ex in examples]
    )
    batch = {k: v.to(device) for k, v in batch.items()}
    torch.manual_seed(0)
    model = m.prepare(loaded.model, cfg.method, ModelContext("causal", loaded.source.path, ts.eval.instruction))
    model.train()
    tokens = int(batch["input_ids"].numel())
    recompute = checkpointing == "on" or (checkpointing == "auto" and checkpointing_pays(model, tokens))
    if recompute:
        enable_gradient_checkpointing(model)
    # `auto` decides as for a real training run (>= AUTO_MIN_STEPS steps), not for this bench's few steps.
    setting = {"auto": "auto", "on": True, "off": False}[compile_setting]
    compiled = decide_compile(setting, model, device, total_steps=AUTO_MIN_STEPS, processes=1)
    forward_model = compiled_for_training(model) if compiled else model
    amp = resolve_precision(precision, device)
    rounded, dtype = None, autocast_dtype(amp)  # as training.frozen_weights: auto does in training/loop.py
    if frozen_weights == "auto" and dtype is not None:
        rounded = store_frozen_rounded(model, dtype, loaded.source.path)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(params, cfg.training.model_copy(update={"lr": 1e-5}), device)  # tunelab's AdamW
    rss_ready = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        with autocast(device, amp):
            loss = completion_loss(forward_model, batch, "causal")
        loss.backward()
        losses.append(float(loss))
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cpu":
            release_freed_memory(collect=False)  # as tunelab's training loop does after every micro-batch
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    out = {
        "method": method,
        "checkpointing": checkpointing,  # the setting: auto, on or off
        "recomputed": recompute,  # what it came to for this model and batch
        "compile": compile_setting,
        "compiled": compiled,
        "frozen_weights_setting": frozen_weights,
        "loss": loss_setting,
        "frozen_weights": (amp + (", whole base" if rounded.whole_base else "")) if rounded is not None else "fp32",
        "losses": losses,  # from the same batch, step by step (lr 1e-5)
        "allocator": active_allocator(),
        "attn": attn,
        "precision": amp,
        "step_seconds": sorted(times)[len(times) // 2],
        "step_seconds_all": times,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_after_load_bytes": rss_ready,
        "batch_shape": list(batch["input_ids"].shape),
        "completion_tokens": int((batch["labels"] != -100).sum()),
        **parameter_counts(model),
    }
    if device.type == "cuda":
        out["peak_cuda_allocated_bytes"] = torch.cuda.max_memory_allocated()
    return out


def same_settings(a: dict, b: dict) -> bool:
    keys = ("checkpointing", "compile", "allocator", "frozen_weights_setting", "loss")
    return all(a.get(k, "auto") == b.get(k, "auto") for k in keys)


def worker_env(allocator: str) -> dict[str, str]:
    from tunelab.allocator import preload_env

    env = {**os.environ, "TQDM_DISABLE": "1", "TUNELAB_ALLOCATOR": allocator}
    if allocator == "system":
        return env
    preloaded = preload_env(env)
    if preloaded is None and "libmimalloc" not in env.get("LD_PRELOAD", ""):
        raise SystemExit("--allocator mimalloc: cmeel-mimalloc is not installed here")
    return preloaded or env


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default=",".join(METHOD_CONFIGS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--max-input-tokens", type=int, default=320)
    ap.add_argument("--precision", default="auto", help="autocast precision, as training.precision")
    ap.add_argument(
        "--checkpointing",
        default="auto",
        help="training.gradient_checkpointing settings to measure (auto, on, off), comma-separated",
    )
    ap.add_argument(
        "--compile", default="auto,off", help="training.compile settings to measure (auto, on, off), comma-separated"
    )
    ap.add_argument(
        "--allocator", default="mimalloc,system", help="TUNELAB_ALLOCATOR values to measure (mimalloc, system)"
    )
    ap.add_argument(
        "--frozen-weights",
        default="auto",
        help="training.frozen_weights settings to measure (auto, fp32), comma-separated",
    )
    ap.add_argument(
        "--loss",
        default="auto",
        help="auto (chunked where the head is a plain projection) and/or whole (all completion logits at once)",
    )
    ap.add_argument("--attn", default="auto", help="model.attn_implementation values to measure, comma-separated")
    ap.add_argument(
        "--return-freed-memory",
        action="store_true",
        help="fixed glibc mmap threshold in the workers: peak RSS follows live memory",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "methods.json"))
    args = ap.parse_args()
    if args.worker:
        row = worker(
            args.worker,
            args.batch,
            args.steps,
            args.max_input_tokens,
            args.precision,
            args.checkpointing,
            args.attn,
            args.compile,
            args.frozen_weights,
            args.loss,
        )
        print(json.dumps(row))
        return
    rows = []
    grid = [  # each method's allocators side by side, so that drift of the machine touches both alike
        (k, c, f, lo, m, a, al)
        for k in args.compile.split(",")
        for c in args.checkpointing.split(",")
        for f in args.frozen_weights.split(",")
        for lo in args.loss.split(",")
        for m in args.methods.split(",")
        for a in args.attn.split(",")
        for al in args.allocator.split(",")
    ]
    for comp, ckpt, frozen, loss, method, attn, allocator in grid:
        cmd = [sys.executable, __file__, "--worker", method, "--batch", str(args.batch), "--steps", str(args.steps)]
        cmd += ["--max-input-tokens", str(args.max_input_tokens), "--precision", args.precision]
        cmd += ["--attn", attn, "--checkpointing", ckpt, "--compile", comp, "--frozen-weights", frozen, "--loss", loss]
        env = worker_env(allocator)
        if args.return_freed_memory:
            env["MALLOC_MMAP_THRESHOLD_"] = "65536"
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(f"{method}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(
            f"  measured {method} (checkpointing {ckpt}, compile {comp}, frozen weights {rows[-1]['frozen_weights']}, "
            f"loss {loss}, "
            f"{rows[-1]['allocator']})",
            file=sys.stderr,
        )
    mem_key = "peak_cuda_allocated_bytes" if "peak_cuda_allocated_bytes" in rows[0] else "peak_rss_bytes"
    print(
        f"\nbatch {rows[0]['batch_shape']} (DialogSum train, chat template), precision {rows[0]['precision']}, median "
        f"of {args.steps} steps after 1 warm-up; memory = {mem_key} (whole process, model included)"
        + ("; freed memory returned to the OS (fixed mmap threshold)" if args.return_freed_memory else "")
        + "; ratios to full fine-tuning with the same checkpointing, compile and allocator settings\n"
    )
    print(
        "| method | checkpointing | compile | frozen weights | loss | allocator | trainable % | step s | step / full | peak memory GiB | "
        "memory / full |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ref = next(x for x in rows if x["method"] == "full" and same_settings(x, r))
        setting = r["checkpointing"] + (" (on)" if r["checkpointing"] == "auto" and r["recomputed"] else "")
        compiled = r["compile"] + (" (on)" if r["compile"] == "auto" and r["compiled"] else "")
        print(
            f"| {r['method']} | {setting} | {compiled} | {r.get('frozen_weights', 'fp32')} | {r.get('loss', 'auto')} | {r['allocator']} | {r['trainable_percent']:.3f} | {r['step_seconds']:.2f} | "
            f"{r['step_seconds'] / ref['step_seconds']:.2f} | {r[mem_key] / 2**30:.2f} | "
            f"{r[mem_key] / ref[mem_key]:.2f} |"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    import torch

    from tunelab.environment import describe_environment

    Path(args.out).write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "cpu_count": os.cpu_count(),
                "environment": describe_environment(torch.device("cpu")),
                "return_freed_memory": args.return_freed_memory,
                "date": time.strftime("%Y-%m-%d"),
                "rows": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
