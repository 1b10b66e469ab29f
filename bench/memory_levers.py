"""Each memory lever of issue #15 on its own: peak RSS, step time and the losses of a few steps, one process per row.

SmolLM2-135M-Instruct on the demo's batch (8 DialogSum training dialogues, inputs cut at 320 tokens), bf16 autocast.
Levers (comma-separated after the method, e.g. `lora:ckpt,bf16frozen`):

    ckpt        gradient checkpointing
    fused       fused AdamW (one kernel per step)          loop   AdamW without foreach
    bf16frozen  frozen Linear weights stored in bf16 (autocast casts them to bf16 anyway)
    mallopt     glibc: fixed mmap and trim thresholds of 64 KiB (freed memory goes back to the OS)
    mmap1m      the same at 1 MiB                           mmap4m  the same at 4 MiB
    vary        a different batch of 8 every step (the demo's dynamic padding: lengths change from step to step)
    trim        hand freed memory back to the OS after every optimizer step (glibc `malloc_trim(0)`)
    arena1      glibc: a single malloc arena (M_ARENA_MAX=1)
    keepgrads   gradients kept between steps and zeroed in place (`zero_grad(set_to_none=False)`)
    flatgrads   all gradients views of one contiguous buffer (allocated once, off glibc's heap), zeroed in place
    flatstate   AdamW's moments views of two contiguous buffers, allocated before the first step
    pad64       every batch padded to a multiple of 64 columns (few distinct shapes: freed blocks fit the next step)
    noprimcache oneDNN's primitive cache off (ONEDNN_PRIMITIVE_CACHE_CAPACITY=0: nothing kept per shape)
    lruN        PyTorch's own cache of oneDNN computations (ideep's, LRU_CACHE_CAPACITY) and oneDNN's primitive
                cache both bounded to N entries (e.g. lru64; tunelab sets 64 since tunelab/native.py; lru1024
                is oneDNN's own default)
    lastcols    logits for the last columns of the batch (from the earliest completion start), not only at the
                positions that predict a completion token (tunelab's loss before the boolean position mask)

    python bench/memory_levers.py [lora: lora:ckpt full: ...]   # writes bench/results/memory_levers.jsonl
    STEPS=12 OUT=memory_levers_vary.jsonl python bench/memory_levers.py lora:ckpt,vary lora:ckpt,vary,trim
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GRID = [
    "lora:", "lora:fused", "lora:bf16frozen", "lora:mallopt", "lora:mmap1m", "lora:ckpt", "lora:ckpt,bf16frozen",
    "full:", "full:fused", "full:loop", "full:ckpt", "full:ckpt,fused", "full:mallopt,fused", "prompt_tuning:",
]  # fmt: skip
METHODS = {
    "full": {"name": "full"},
    "lora": {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
    "prompt_tuning": {"name": "prompt_tuning", "num_virtual_tokens": 20, "init": "text"},
}


def _mallopt(threshold: int) -> None:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, threshold)  # M_MMAP_THRESHOLD (fixed: no dynamic growth)
    libc.mallopt(-1, threshold)  # M_TRIM_THRESHOLD


def _current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _pad_columns(batch: dict, multiple: int, pad_id: int) -> dict:
    import torch

    extra = -batch["input_ids"].shape[1] % multiple
    fill = {"input_ids": pad_id, "attention_mask": 0, "labels": -100}
    return {k: torch.nn.functional.pad(v, (0, extra), value=fill[k]) for k, v in batch.items()}


def worker(method: str, levers: set[str], steps: int) -> dict:
    libc = ctypes.CDLL("libc.so.6")
    if "arena1" in levers:
        libc.mallopt(-8, 1)  # M_ARENA_MAX
    if "mallopt" in levers:
        _mallopt(64 * 1024)
    if "mmap1m" in levers:
        _mallopt(1 << 20)
    if "mmap4m" in levers:
        _mallopt(4 << 20)
    if "noprimcache" in levers:
        os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = "0"  # read when oneDNN starts, after this
    for lever in levers:
        if lever.startswith("lru") and lever[3:].isdigit():
            os.environ["LRU_CACHE_CAPACITY"] = os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = lever[3:]
    import torch

    import tunelab
    from tunelab.data import PromptEncoder, TemplateSet, TrainCollator
    from tunelab.data.sources import load_split
    from tunelab.methods import ModelContext, get_method
    from tunelab.models import load_model, pick_device
    from tunelab.models.precision import autocast
    from tunelab.training.loop import enable_gradient_checkpointing
    import tunelab.training.loss as loss_module
    from tunelab.training.loss import completion_loss

    if "lastcols" in levers:
        loss_module.takes_position_mask = lambda model: False

    cfg = tunelab.build_config({"method": METHODS[method]})
    device = pick_device()
    m = get_method(method)
    loaded = load_model(cfg.model, device=device, extra_kwargs=m.load_kwargs(cfg.method))
    templates = TemplateSet("dialogue_summarization")
    enc = PromptEncoder(loaded.tokenizer, "causal", loaded.use_chat_template, 320, 64)
    examples = load_split(cfg.data, "train")[: 8 * steps if "vary" in levers else 8]
    collate = TrainCollator(loaded.tokenizer.pad_token_id, "causal")
    encoded = [enc.encode_for_training(templates.eval, ex) for ex in examples]
    batches = [collate(encoded[i : i + 8]) for i in range(0, len(encoded), 8)]
    if "pad64" in levers:
        batches = [_pad_columns(b, 64, loaded.tokenizer.pad_token_id) for b in batches]
    torch.manual_seed(0)
    model = m.prepare(loaded.model, cfg.method, ModelContext("causal", loaded.source.path, templates.eval.instruction))
    model.train()
    if "bf16frozen" in levers:
        tied = {id(mod.weight) for mod in model.modules() if isinstance(mod, torch.nn.Embedding)}
        for mod in model.modules():
            if type(mod) is torch.nn.Linear and not mod.weight.requires_grad and id(mod.weight) not in tied:
                mod.weight.data = mod.weight.data.to(torch.bfloat16)
    if "ckpt" in levers:
        enable_gradient_checkpointing(model)
    params = [p for p in model.parameters() if p.requires_grad]
    kind = {"fused": {"fused": True}, "loop": {"foreach": False}}
    options = next((kind[k] for k in kind if k in levers), {})
    opt = torch.optim.AdamW(params, lr=1e-5, **options)
    if "flatgrads" in levers:
        flat = torch.zeros(sum(p.numel() for p in params))
        for p, view in zip(params, flat.split([p.numel() for p in params])):
            p.grad = view.view_as(p)
    if "flatstate" in levers:
        sizes = [p.numel() for p in params]
        moments = torch.zeros(2, sum(sizes))
        for p, avg, avg_sq in zip(params, moments[0].split(sizes), moments[1].split(sizes)):
            opt.state[p] = {"step": torch.tensor(0.0), "exp_avg": avg.view_as(p), "exp_avg_sq": avg_sq.view_as(p)}
    keep_grads = bool({"keepgrads", "flatgrads"} & levers)
    times, losses, trim_seconds, rss_after_step = [], [], 0.0, []
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for step in range(steps):
        batch = batches[step % len(batches)]
        t0 = time.perf_counter()
        with autocast(device, "bf16"):
            loss = completion_loss(model, batch, "causal")
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=not keep_grads)
        losses.append(float(loss))
        if "trim" in levers:
            t1 = time.perf_counter()
            libc.malloc_trim(0)
            trim_seconds += time.perf_counter() - t1
        times.append(time.perf_counter() - t0)
        rss_after_step.append(_current_rss())
    timed = sorted(times[1:])
    return {
        "method": method,
        "levers": sorted(levers),
        "batch_shapes": [list(b["input_ids"].shape) for b in batches],
        "minor_page_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before,
        "trim_seconds": trim_seconds,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "step_seconds": timed[len(timed) // 2],
        "step_seconds_all": times,
        "losses": losses,
        "rss_after_step_bytes": rss_after_step,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        method, levers = sys.argv[2].split(":")
        print(json.dumps(worker(method, {x for x in levers.split(",") if x}, int(sys.argv[3]))))
        return
    out = ROOT / "bench" / "results" / os.environ.get("OUT", "memory_levers.jsonl")
    with out.open("w") as f:
        for spec in sys.argv[1:] or DEFAULT_GRID:
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", spec, os.environ.get("STEPS", "4")],
                capture_output=True,
                text=True,
                env={**os.environ, "TQDM_DISABLE": "1"},
            )
            if proc.returncode != 0:
                print(f"{spec}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            f.write(json.dumps(row) + "\n")
            print(f"{spec}: {row['peak_rss_bytes'] / 2**30:.2f} GiB, {row['step_seconds']:.1f} s/step", file=sys.stderr)


if __name__ == "__main__":
    main()
