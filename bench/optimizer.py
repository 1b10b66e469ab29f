"""AdamW's step on smollm2-135m-instruct's parameters: torch's forms side by side.

tunelab builds its optimizer with `tunelab.training.loop.build_optimizer` (fused where the device has the kernel,
as `transformers.Trainer`'s default `adamw_torch_fused`). This measures the optimizer step alone, on the real
model's trainable parameters for full fine-tuning and for LoRA (r 16, all linear layers), with the same seeded
gradients for every form:

- `default`: torch's choice when neither `fused` nor `foreach` is given (a loop over tensors on a CPU; tunelab
  before), the reference;
- `foreach`: the multi-tensor form;
- `fused`: one kernel per tensor (tunelab now).

Forms are interleaved over `--repeats` rounds (median step time per form); after `--steps` steps the weights of
each form are compared with the reference's (largest difference, relative to the largest total update).

    python bench/optimizer.py [--steps 5] [--repeats 3]

Writes bench/results/optimizer.json and prints a Markdown table (bench/results/optimizer.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

FORMS = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}
LORA = {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}


def trainable_parameters(method: dict) -> list[torch.Tensor]:
    """The real model's trainable tensors for a method, detached copies (each form starts from the same values)."""
    import tunelab
    from tunelab.data.templates import TemplateSet
    from tunelab.methods import ModelContext, get_method
    from tunelab.models import load_model

    cfg = tunelab.build_config({"method": method})
    m = get_method(method["name"])
    loaded = load_model(cfg.model, device=torch.device("cpu"), extra_kwargs=m.load_kwargs(cfg.method))
    instruction = TemplateSet("dialogue_summarization").eval.instruction
    model = m.prepare(loaded.model, cfg.method, ModelContext("causal", loaded.source.path, instruction))
    return [p.detach().clone() for p in model.parameters() if p.requires_grad]


def run_form(start: list[torch.Tensor], form: str, steps: int, lr: float) -> tuple[list[float], list[torch.Tensor]]:
    """`steps` AdamW steps from `start` with seeded gradients (new ones each step); step times and final weights."""
    params = [torch.nn.Parameter(t.clone()) for t in start]
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, **FORMS[form])
    times = []
    for _ in range(steps + 1):  # the first step allocates the moments: not timed
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator) * 1e-3
        t0 = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - t0)
    return times[1:], [p.detach() for p in params]


def measure(name: str, method: dict, steps: int, repeats: int, lr: float) -> dict:
    start = trainable_parameters(method)
    times: dict[str, list[float]] = {f: [] for f in FORMS}
    weights: dict[str, list[torch.Tensor]] = {}
    for _ in range(repeats):
        for form in FORMS:
            t, w = run_form(start, form, steps, lr)
            times[form].append(statistics.median(t))
            weights[form] = w
    reference = weights["default"]
    largest_update = max(float((w - s).abs().max()) for w, s in zip(reference, start))
    rows = []
    for form in FORMS:
        difference = max(float((w - r).abs().max()) for w, r in zip(weights[form], reference))
        rows.append(
            {
                "parameters": name,
                "form": form,
                "tensors": len(start),
                "numel": sum(t.numel() for t in start),
                "step_seconds": statistics.median(times[form]),
                "step_seconds_all": times[form],
                "largest_difference": difference,
                "largest_difference_over_largest_update": difference / largest_update,
            }
        )
    return {"rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "optimizer.json"))
    args = ap.parse_args()
    from tunelab.environment import describe_environment

    rows = []
    for name, method in (("full", {"name": "full"}), ("lora", LORA)):
        rows += measure(name, method, args.steps, args.repeats, lr=1e-5)["rows"]
    env = describe_environment(torch.device("cpu"))
    print(
        f"\nAdamW step on smollm2-135m-instruct's trainable parameters, median of {args.repeats} interleaved rounds "
        f"of {args.steps} steps; {env['cpu']['model']}, {env['torch_threads']} threads, torch {torch.__version__}\n"
    )
    print(
        "| parameters | form | tensors | parameters (M) | step ms | step / default | weights after the steps: "
        "largest difference / largest update |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ref = next(x for x in rows if x["parameters"] == r["parameters"] and x["form"] == "default")
        print(
            f"| {r['parameters']} | {r['form']} | {r['tensors']} | {r['numel'] / 1e6:.1f} | "
            f"{1000 * r['step_seconds']:.1f} | {r['step_seconds'] / ref['step_seconds']:.2f} | "
            f"{r['largest_difference_over_largest_update']:.1e} |"
        )
    Path(args.out).write_text(
        json.dumps({"date": time.strftime("%Y-%m-%d"), "environment": env, "steps": args.steps, "rows": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
