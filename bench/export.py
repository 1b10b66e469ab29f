"""`tunelab export` verified by two independent readers: transformers' GGUF loader and llama.cpp itself.

For a finished causal LoRA run (default: the demo's `runs/dialogsum-compare/lora`), exports the merged model in
every dtype and the adapter alone, then on the first N (20) DialogSum test dialogues (the run's own prompts):

- transformers loads each file (`gguf_file=`): max |logit difference| to the merged PyTorch model over the
  prompts' positions, and whether its greedy outputs equal tunelab's;
- llama.cpp (`llama-cpp-python`, when installed: `make llamacpp`) loads each file: whether it tokenizes the
  prompts to the same ids, and its greedy outputs from the same ids against tunelab's (exact matches and
  token agreement: the share of tunelab's output tokens before the first difference; ROUGE-L against the
  references); the base + LoRA
  file pair against the merged file.

Writes bench/results/export.json and export.md.

    python bench/export.py [--run runs/dialogsum-compare/lora] [--n 20] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tunelab.environment import describe_environment  # noqa: E402
from tunelab.evaluation.metrics import rouge  # noqa: E402
from tunelab.recipes.components import load_eval_examples  # noqa: E402
from tunelab.recipes.evaluating import open_run  # noqa: E402
from tunelab.recipes.export import export_run  # noqa: E402


def greedy_torch(model, prompts: list[list[int]], max_new: int, eos: int) -> list[list[int]]:
    outs = []
    for ids in prompts:
        with torch.no_grad():
            out = model.generate(
                torch.tensor([ids]), max_new_tokens=max_new, do_sample=False, eos_token_id=eos, pad_token_id=eos
            )
        new = out[0, len(ids) :].tolist()
        outs.append(new[: new.index(eos)] if eos in new else new)  # llama.cpp's loop stops before EOS too
    return outs


def max_logit_diff(a, b, prompts: list[list[int]]) -> float:
    worst = 0.0
    for ids in prompts:
        with torch.no_grad():
            x = torch.tensor([ids])
            worst = max(worst, (a(x).logits - b(x).logits).abs().max().item())
    return worst


def agreement(reference: list[list[int]], other: list[list[int]]) -> dict:
    """Exact matches, and the share of reference tokens before the first difference."""
    exact, agreed, total = 0, 0, 0
    for ref, out in zip(reference, other, strict=True):
        exact += ref == out
        n = next((i for i, (x, y) in enumerate(zip(ref, out)) if x != y), min(len(ref), len(out)))
        agreed, total = agreed + n, total + len(ref)
    return {"exact": exact, "of": len(reference), "token_agreement": round(agreed / max(total, 1), 4)}


def greedy_llamacpp(
    path: Path,
    prompts: list[list[int]],
    max_new: int,
    eos: int,
    lora: Path | None = None,
    texts: list[str] | None = None,
) -> tuple[list[list[int]], bool]:
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(path), lora_path=str(lora) if lora else None, n_ctx=2048, n_threads=2, verbose=False, seed=0
    )
    same_ids = all(llm.tokenize(t.encode(), add_bos=False, special=True) == ids for t, ids in zip(texts or [], prompts))
    outs = []
    for ids in prompts:
        llm.reset()
        out: list[int] = []
        for token in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
            if token == eos or len(out) >= max_new:
                break
            out.append(token)
        outs.append(out)
    del llm
    return outs, same_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(ROOT / "runs/dialogsum-compare/lora"))
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--out", default=str(ROOT / "bench/results/export.json"))
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    session = open_run(args.run)  # base + adapter, fp32 on the CPU
    merged = session.model.merge_and_unload() if hasattr(session.model, "merge_and_unload") else session.model
    merged.eval()
    tok = session.loaded.tokenizer
    examples = load_eval_examples(session.cfg, "test", args.n)
    encoded = [session.encoder.encode_for_generation(session.templates.eval, ex) for ex in examples]
    prompts, texts = [e.input_ids for e in encoded], [e.prompt for e in encoded]
    reference = greedy_torch(merged, prompts, args.max_new_tokens, tok.eos_token_id)
    references = [list(ex.references) for ex in examples]

    def rouge_l(outputs: list[list[int]]) -> float:
        texts = [tok.decode(o, skip_special_tokens=True).strip() for o in outputs]
        return round(rouge(texts, references, bootstrap_samples=0)["rougeL"]["f1"], 2)

    try:
        import llama_cpp

        llamacpp_version = llama_cpp.__version__
    except ImportError:
        llamacpp_version = None
    results: dict = {
        "run": args.run,
        "prompts": args.n,
        "max_new_tokens": args.max_new_tokens,
        "machine": describe_environment(torch.device("cpu"), "float32", "float32"),
        "llama_cpp_python": llamacpp_version,
        "tunelab_rougeL": rouge_l(reference),
        "dtypes": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("f32", "f16", "bf16", "q8_0"):
            t0 = time.perf_counter()
            out = export_run(args.run, Path(tmp) / dtype, dtype=dtype).out
            row: dict = {
                "seconds": round(time.perf_counter() - t0, 1),
                "mib": round((out / "model.gguf").stat().st_size / 2**20, 1),
            }
            loaded = AutoModelForCausalLM.from_pretrained(out, gguf_file="model.gguf", dtype=torch.float32).eval()
            row["transformers"] = {
                "max_logit_diff": max_logit_diff(merged, loaded, prompts),
                **agreement(reference, greedy_torch(loaded, prompts, args.max_new_tokens, tok.eos_token_id)),
            }
            del loaded
            if llamacpp_version:
                outs, same_ids = greedy_llamacpp(
                    out / "model.gguf", prompts, args.max_new_tokens, tok.eos_token_id, texts=texts
                )
                row["llama_cpp"] = {"same_prompt_ids": same_ids, **agreement(reference, outs), "rougeL": rouge_l(outs)}
                if dtype == "f16":
                    merged_outs = outs
            results["dtypes"][dtype] = row
            print(dtype, json.dumps(row), flush=True)
        if llamacpp_version:
            pair = export_run(args.run, Path(tmp) / "adapter", dtype="f16", adapter_only=True).out
            outs, _ = greedy_llamacpp(
                pair / "base.gguf", prompts, args.max_new_tokens, tok.eos_token_id, lora=pair / "adapter.gguf"
            )
            results["adapter_only_f16"] = {
                "adapter_mib": round((pair / "adapter.gguf").stat().st_size / 2**20, 1),
                "vs_merged_f16": agreement(merged_outs, outs),
                "vs_tunelab": agreement(reference, outs),
            }
            print("adapter-only", json.dumps(results["adapter_only_f16"]), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        f"tunelab (PyTorch, merged fp32) ROUGE-L on the {args.n} dialogues: {results['tunelab_rougeL']}",
        "",
        "| dtype | size (MiB) | transformers max logit diff | transformers greedy = tunelab | "
        "llama.cpp greedy = tunelab | llama.cpp token agreement | llama.cpp ROUGE-L |",
        "|---|---|---|---|---|---|---|",
    ]
    for dtype, row in results["dtypes"].items():
        lc = row.get("llama_cpp", {})
        lines.append(
            f"| {dtype} | {row['mib']} | {row['transformers']['max_logit_diff']:.2e} | "
            f"{row['transformers']['exact']}/{row['transformers']['of']} | "
            f"{lc.get('exact', '-')}/{lc.get('of', '-')} | {lc.get('token_agreement', '-')} | "
            f"{lc.get('rougeL', '-')} |"
        )
    Path(args.out).with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
