"""What full fine-tuning keeps from step to step (issue #15's creeping peak): memray's native heap profile of
steps 2..N of the demo's changing batches (checkpointing on, `malloc_trim` after each step, as tunelab trains),
then the allocations made in those steps and still alive after the last one, grouped by where they were made.

    pip install memray   # bench-only; not a tunelab dependency
    python bench/heap_creep.py [STEPS]   # default 12; writes runs/heap_creep.bin (~1 GB) and prints the table
"""

from __future__ import annotations

import collections
import ctypes
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def profile(steps: int, capture: Path) -> None:
    import memray
    import torch

    import tunelab
    from memory_levers import METHODS
    from tunelab.data import PromptEncoder, TemplateSet, TrainCollator
    from tunelab.data.sources import load_split
    from tunelab.methods import ModelContext, get_method
    from tunelab.models import load_model, pick_device
    from tunelab.models.precision import autocast
    from tunelab.training.loop import enable_gradient_checkpointing
    from tunelab.training.loss import completion_loss

    cfg = tunelab.build_config({"method": METHODS["full"]})
    device = pick_device()
    method = get_method("full")
    loaded = load_model(cfg.model, device=device, extra_kwargs=method.load_kwargs(cfg.method))
    templates = TemplateSet("dialogue_summarization")
    encoder = PromptEncoder(loaded.tokenizer, "causal", loaded.use_chat_template, 320, 64)
    encoded = [encoder.encode_for_training(templates.eval, ex) for ex in load_split(cfg.data, "train")[: 8 * steps]]
    collate = TrainCollator(loaded.tokenizer.pad_token_id, "causal")
    batches = [collate(encoded[i : i + 8]) for i in range(0, len(encoded), 8)]
    torch.manual_seed(0)
    context = ModelContext("causal", loaded.source.path, templates.eval.instruction)
    model = method.prepare(loaded.model, cfg.method, context)
    model.train()
    enable_gradient_checkpointing(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    trim = ctypes.CDLL("libc.so.6").malloc_trim

    def step(batch) -> None:
        with autocast(device, "bf16"):
            loss = completion_loss(model, batch, "causal")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        trim(0)

    step(batches[0])  # the optimizer's state and the first shapes are not creep
    capture.unlink(missing_ok=True)
    with memray.Tracker(capture, native_traces=True):
        for batch in batches[1:]:
            step(batch)


def still_alive(capture: Path, top: int = 12) -> str:
    import memray

    size: collections.Counter[str] = collections.Counter()
    count: collections.Counter[str] = collections.Counter()
    for record in memray.FileReader(capture).get_leaked_allocation_records(merge_threads=True):
        frames = record.stack_trace(max_stacks=4)
        where = " <- ".join(f"{fn} ({file.split('site-packages/')[-1]}:{line})" for fn, file, line in frames) or "?"
        size[where] += record.size
        count[where] += record.n_allocations
    lines = [f"still alive after the last step: {sum(size.values()) / 2**20:.1f} MiB", "", "| MiB | blocks | made in |"]
    lines.append("|---|---|---|")
    lines += [f"| {b / 2**20:.1f} | {count[w]} | {w[:200]} |" for w, b in size.most_common(top)]
    return "\n".join(lines)


if __name__ == "__main__":
    capture = ROOT / "runs" / "heap_creep.bin"
    capture.parent.mkdir(exist_ok=True)
    profile(int(sys.argv[1]) if len(sys.argv) > 1 else 12, capture)
    print(still_alive(capture))
