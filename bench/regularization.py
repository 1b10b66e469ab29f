"""What L2-SP's penalty costs a full-fine-tuning step of smollm2-135m-instruct, in its two forms side by side.

- `none`: the loss alone, the reference;
- `autograd`: the penalty strength/2 * sum (theta - theta0)^2 added to the loss and differentiated with it
  (tunelab before);
- `direct`: its gradient strength * (theta - theta0) added to the gradients in place once per step
  (`AnchoredPenalty.add_to_gradients`, tunelab now).

Each form runs in a process of its own: the real model and a copy of its starting weights (the anchors), fused
AdamW, bf16 autocast, one seeded batch of 8 x 256 tokens (loss on the second half), one untimed step, then `--steps`
timed ones. Memory is the steps' peak resident memory above the memory at their start (the kernel's high-water mark,
as tunelab's run records measure it). The two penalty forms must train alike: their losses and the weights' distance
from the start after the steps are compared.

    python bench/regularization.py [--steps 8] [--strength 0.01]

Writes bench/results/regularization.json and prints a Markdown table (bench/results/regularization.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

FORMS = ("none", "autograd", "direct")


def run_form(form: str, steps: int, strength: float) -> dict:
    """Train in this process; step times, losses, distance from the start and peak memory."""
    import tunelab
    from tunelab.models import load_model
    from tunelab.training.loss import completion_loss
    from tunelab.training.memory import PeakMemory
    from tunelab.training.regularization import AnchoredPenalty

    torch.manual_seed(0)
    loaded = load_model(tunelab.build_config({"method": {"name": "full"}}).model, device=torch.device("cpu"))
    model = loaded.model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    penalty = AnchoredPenalty(params, strength)  # its anchors: the starting weights, one copy in every form
    start = penalty.anchors
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)
    ids = torch.randint(0, model.config.vocab_size, (8, 256), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :128] = -100
    batch = {"input_ids": ids, "labels": labels}
    memory = PeakMemory(torch.device("cpu"))  # the steps' peak, from here (the kernel's high-water mark reset)
    times, losses = [], []
    for _ in range(steps + 1):  # the first step allocates the optimizer's moments: not timed
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = completion_loss(model, batch, "causal")
        total = loss
        if form == "autograd":
            total = loss + 0.5 * strength * sum((p - a).pow(2).sum() for p, a in zip(params, start))
        total.backward()
        if form == "direct":
            penalty.add_to_gradients()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        losses.append(float(loss))
    distance = sum(float((p.detach() - s).pow(2).sum()) for p, s in zip(params, start)) ** 0.5
    return {
        "form": form,
        "step_seconds": statistics.median(times[1:]),
        "step_seconds_all": times[1:],
        "losses": losses,
        "distance_from_start": distance,
        **memory.as_dict(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--strength", type=float, default=0.01)
    ap.add_argument("--form", choices=FORMS, help=argparse.SUPPRESS)  # one form, in its own process
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "regularization.json"))
    args = ap.parse_args()
    if args.form:
        print(json.dumps(run_form(args.form, args.steps, args.strength)))
        return
    from tunelab.environment import describe_environment

    rows = []
    for form in FORMS:
        command = [
            sys.executable,
            __file__,
            "--form",
            form,
            "--steps",
            str(args.steps),
            "--strength",
            str(args.strength),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    by = {r["form"]: r for r in rows}
    same_losses = max(abs(a - b) for a, b in zip(by["autograd"]["losses"], by["direct"]["losses"]))
    same_distance = abs(by["autograd"]["distance_from_start"] / by["direct"]["distance_from_start"] - 1)
    env = describe_environment(torch.device("cpu"))
    lines = [
        f"L2-SP (strength {args.strength}) in a full-fine-tuning step of smollm2-135m-instruct (batch 8 x 256, bf16 "
        f"autocast, fused AdamW, eager), median of {args.steps} steps, each form in its own process; "
        f"{env['cpu']['model']}, {env['torch_threads']} threads, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}",
        "",
        "| form | step s | step / none | memory at start GiB | steps' peak increase GiB | increase - none's GiB |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['form']} | {r['step_seconds']:.2f} | {r['step_seconds'] / by['none']['step_seconds']:.2f} | "
            f"{r['rss_at_start_bytes'] / 2**30:.2f} | {r['peak_rss_increase_bytes'] / 2**30:.2f} | "
            f"{(r['peak_rss_increase_bytes'] - by['none']['peak_rss_increase_bytes']) / 2**30:+.2f} |"
        )
    lines += [
        "",
        f"autograd vs direct: largest loss difference over the {args.steps + 1} steps {same_losses:.2e}; weights' "
        f"distance from the start differs by a relative {same_distance:.2e}.",
    ]
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.write_text(json.dumps({"environment": env, "strength": args.strength, "steps": args.steps, "rows": rows}))
    out.with_suffix(".md").write_text(table + "\n")


if __name__ == "__main__":
    main()
