"""tunelab vs the course recipe and TRL's SFTTrainer, measured side by side in one run on this machine.

    python bench/throughput.py [--quick] [--parts train,eval] [--repeats 3] [--archs causal,seq2seq] [--out F]
                                                                              (needs: pip install trl)

1. Training throughput, LoRA and full fine-tuning, on smollm2-135m-instruct (causal) and a random T5 of
   flan-t5-small's shape (seq2seq; SmolLM2's tokenizer, as no T5 tokenizer is available offline). Sides:
   - reference: `transformers.Trainer` with a PEFT model, as the course notebooks write it (causal:
     DataCollatorForLanguageModeling, dynamic padding, loss on every token; seq2seq: inputs and labels
     padded to max_length, default_data_collator);
   - trl (causal): TRL's `SFTTrainer` on a conversational prompt-completion dataset (completion-only loss),
     padding-free where TRL supports it on the device (FlashAttention; dynamic padding on a CPU);
   - tunelab: `train_model`, eager and with `training.compile` on (its compiled decoder blocks).
   All sides see the same examples, batch size and steps, in fp32 and in bf16 (autocast), without gradient
   checkpointing (like for like); then TRL's and tunelab's defaults in bf16 (TRL: checkpointing on;
   tunelab: checkpointing `auto` and compiled, as `training.compile: auto` trains any run of >= 20 steps: the
   bench's own runs are shorter, so it sets compile on). The second epoch over the same examples is timed; every side runs `--repeats` times,
   interleaved, and the median and the spread are kept.
2. Evaluation: tunelab's batched generation vs the per-example `model.generate` loop of the course lab,
   greedy, on both models; fp32 on both sides with identical predictions asserted (bf16 shown too), and
   the fp32 bound: the prompts' forward passes alone, which any method with the loop's arithmetic must
   also compute. (The random T5 would emit EOS at once; both sides are held to 48 new tokens.)
3. Hardware bound: a GEMM microbenchmark (fp32, bf16; best of three, before and after the training part)
   and the model FLOPs of tunelab's causal training steps (MFU).
The machine (CPU model, ISA flags such as AMX / AVX512-BF16, threads, library versions) is recorded beside the
results. Prints ratios and writes bench/results/throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from gemm_shapes import gemm_flops  # noqa: E402  (bench/, the script's folder, is on sys.path)

import tunelab  # noqa: E402
from tunelab.data import PromptEncoder, TemplateSet  # noqa: E402
from tunelab.data.encoding import encode_training_set  # noqa: E402
from tunelab.data.sources import load_split  # noqa: E402
from tunelab.evaluation.generation import generate_texts  # noqa: E402
from tunelab.methods import ModelContext, get_method  # noqa: E402
from tunelab.models.precision import resolve_precision  # noqa: E402
from tunelab.training import train_model  # noqa: E402

CPU = torch.device("cpu")
LORA = {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}


def smol_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tunelab.pull_model("smollm2-135m-instruct"))


def make_model(arch: str):
    from transformers import AutoModelForCausalLM, T5Config, T5ForConditionalGeneration

    if arch == "causal":
        return AutoModelForCausalLM.from_pretrained(tunelab.pull_model("smollm2-135m-instruct"), dtype=torch.float32)
    tok = smol_tokenizer()
    torch.manual_seed(0)
    cfg = T5Config(
        vocab_size=len(tok),
        d_model=512,
        d_kv=64,
        d_ff=1024,
        num_layers=8,
        num_decoder_layers=8,
        num_heads=6,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.pad_token_id,
    )
    return T5ForConditionalGeneration(cfg)


def examples(n: int):
    cfg = tunelab.build_config({})
    return load_split(cfg.data, "train")[:n]


@dataclass(frozen=True)
class Side:
    """One way of training, timed: `family` tunelab | reference (the course recipe) | trl (SFTTrainer)."""

    family: str
    precision: str  # fp32 | bf16
    checkpointing: str = "off"  # off | default (tunelab: auto; TRL: its default, on)
    compiled: bool = False  # tunelab's training.compile

    @property
    def name(self) -> str:
        if self.checkpointing == "default":
            return f"{self.family} {self.precision} default"
        return f"{self.family} {self.precision}" + (" compiled" if self.compiled else "")


def sides(arch: str) -> list[Side]:
    """Like for like (no gradient checkpointing anywhere) in fp32 and bf16; then each library's defaults in bf16
    (TRL's SFTConfig turns gradient checkpointing on, tunelab's `auto` decides by the activations' size)."""
    families = ("reference", "trl", "tunelab") if arch == "causal" else ("reference", "tunelab")
    out = [
        side for p in ("fp32", "bf16") for side in [*(Side(f, p) for f in families), Side("tunelab", p, compiled=True)]
    ]
    if arch == "causal":
        out += [Side("trl", "bf16", "default"), Side("tunelab", "bf16", "default", compiled=True)]
    return out


def completion_tokens(arch: str, exs, max_input: int) -> int:
    enc = PromptEncoder(smol_tokenizer(), arch, arch == "causal", max_input, 64)
    train = encode_training_set(enc, exs, [TemplateSet("dialogue_summarization").eval] * len(exs))
    return sum(sum(1 for x in e.labels if x != -100) for e in train)


def tunelab_train(arch: str, method: dict, exs, batch: int, max_input: int, side: Side) -> dict:
    """Seconds of the second epoch (the first warms up), and whether gradient checkpointing was on."""
    tok = smol_tokenizer()
    model = make_model(arch)
    m = get_method(method["name"])
    cfg = tunelab.build_config(
        {
            "method": method,
            "training": {
                "max_steps": 2 * len(exs) // batch,
                "batch_size": batch,
                "lr": 1e-5,
                "warmup_ratio": 0.0,
                "log_every": 1,
                "precision": "auto" if side.precision == "bf16" else "fp32",
                "gradient_checkpointing": "auto" if side.checkpointing == "default" else False,
                "compile": side.compiled,
            },
        }
    )
    model = m.prepare(model, cfg.method, ModelContext(arch, "", ""))
    enc = PromptEncoder(tok, arch, arch == "causal", max_input, 64)
    train = encode_training_set(enc, exs, [TemplateSet("dialogue_summarization").eval] * len(exs))
    times = []

    import tunelab.training.loop as loop

    real = loop.completion_loss

    def timed(model_, batch_, arch_):  # time stamps at each micro-batch start
        times.append(time.perf_counter())
        return real(model_, batch_, arch_)

    loop.completion_loss = timed
    try:
        # tunelab's defaults include frozen weights stored in bf16 under bf16 autocast, read back from the base
        # checkpoint after training (training.frozen_weights: auto); the random T5 has no checkpoint to read from
        base = tunelab.pull_model("smollm2-135m-instruct") if arch == "causal" else None
        r = train_model(
            model, tok, arch, train, None, cfg.training, seed=0, device=CPU, show_progress=False, base_checkpoint=base
        )
    finally:
        loop.completion_loss = real
    assert r.precision == side.precision, f"tunelab trained in {r.precision}, the side asks for {side.precision}"
    assert r.compiled == side.compiled, f"tunelab compiled: {r.compiled}, the side asks for {side.compiled}"
    end = times[0] + r.seconds  # training ended r.seconds after it started (~ first stamp)
    second = times[len(exs) // batch]
    return {
        "epoch_seconds": end - second,
        "first_epoch_seconds": second - times[0],  # with compilation, when compiled
        "gradient_checkpointing": r.gradient_checkpointing,
    }


class _Stamps:
    """A TrainerCallback (built lazily: transformers is imported inside) recording each step's start."""

    def __init__(self):
        from transformers import TrainerCallback

        stamps = self.stamps = []

        class Stamp(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                stamps.append(time.perf_counter())

            def on_train_end(self, args, state, control, **kw):
                stamps.append(time.perf_counter())

        self.callback = Stamp()

    def second_epoch(self, steps_per_epoch: int) -> float:
        return self.stamps[-1] - self.stamps[steps_per_epoch]


def _lora_config(arch: str):
    from peft import LoraConfig

    return LoraConfig(
        task_type="CAUSAL_LM" if arch == "causal" else "SEQ_2_SEQ_LM",
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=0.0,
        target_modules="all-linear",
    )


def _trainer_settings(out: str, batch: int, examples: int, side: Side) -> dict:
    """The TrainingArguments both Trainer-based sides share: two epochs, no saving or logging in the way."""
    return {
        "output_dir": out,
        "per_device_train_batch_size": batch,
        "max_steps": 2 * examples // batch,
        "learning_rate": 1e-5,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "bf16": side.precision == "bf16",
        "logging_steps": 1000,
        "disable_tqdm": True,
        "seed": 0,
    }


def reference_train(arch: str, method: dict, exs, batch: int, max_input: int, side: Side) -> dict:
    """The recipe of the course notebooks: Trainer + PEFT model + the default collators."""
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments, default_data_collator

    tok = smol_tokenizer()
    model = make_model(arch)
    if method["name"] == "lora":
        model = get_peft_model(model, _lora_config(arch))
    ts = TemplateSet("dialogue_summarization")
    prompts = [ts.eval.render(e.input) for e in exs]
    if arch == "causal":
        texts = [
            tok.apply_chat_template(
                [{"role": "user", "content": p}, {"role": "assistant", "content": e.target}], tokenize=False
            )
            for p, e in zip(prompts, exs)
        ]
        ds = Dataset.from_dict(tok(texts, truncation=True, max_length=max_input + 96))
        collator = DataCollatorForLanguageModeling(tok, mlm=False)
    else:
        inputs = tok(prompts, padding="max_length", truncation=True, max_length=max_input + 32)
        labels = tok([e.target for e in exs], padding="max_length", truncation=True, max_length=128)["input_ids"]
        labels = [[x if x != tok.pad_token_id else -100 for x in row] for row in labels]
        ds = Dataset.from_dict({**inputs, "labels": labels})
        collator = default_data_collator
    stamps = _Stamps()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(**_trainer_settings(out, batch, len(exs), side))
        Trainer(model=model, args=args, train_dataset=ds, data_collator=collator, callbacks=[stamps.callback]).train()
    return {"epoch_seconds": stamps.second_epoch(len(exs) // batch), "gradient_checkpointing": False}


def trl_train(arch: str, method: dict, exs, batch: int, max_input: int, side: Side) -> dict:
    """TRL's SFTTrainer as its documentation writes it: a conversational prompt-completion dataset (loss on the
    completion only), the PEFT config passed in. Padding-free batches only where TRL supports them (a
    FlashAttention kernel; not on a CPU), so dynamic padding otherwise."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    assert arch == "causal"
    tok = smol_tokenizer()
    model = make_model(arch)
    ts = TemplateSet("dialogue_summarization")
    ds = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": ts.eval.render(e.input)}],
                "completion": [{"role": "assistant", "content": e.target}],
            }
            for e in exs
        ]
    )
    stamps = _Stamps()
    with tempfile.TemporaryDirectory() as out:
        settings = {} if side.checkpointing == "default" else {"gradient_checkpointing": False}
        args = SFTConfig(
            **_trainer_settings(out, batch, len(exs), side),
            max_length=max_input + 96,
            completion_only_loss=True,
            padding_free=_flash_attention_available(),
            **settings,
        )
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=ds,
            processing_class=tok,
            peft_config=_lora_config(arch) if method["name"] == "lora" else None,
            callbacks=[stamps.callback],
        )
        trainer.train()
        checkpointing = bool(args.gradient_checkpointing)
    return {"epoch_seconds": stamps.second_epoch(len(exs) // batch), "gradient_checkpointing": checkpointing}


def _trl_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("trl")
    except PackageNotFoundError:
        return None


def _flash_attention_available() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


TRAINERS = {"tunelab": tunelab_train, "reference": reference_train, "trl": trl_train}


def measure_training(arch: str, method: dict, exs, batch: int, max_input: int, repeats: int) -> list[dict]:
    """Every side `repeats` times, interleaved (side A, B, C, A, B, C, ...) so that drifts of a noisy machine fall
    on all sides alike; the median and the spread (min, max) of the second epoch's seconds."""
    completion = completion_tokens(arch, exs, max_input)
    runs: dict[Side, list[dict]] = {s: [] for s in sides(arch)}
    for repeat in range(repeats):
        for side in runs:
            r = TRAINERS[side.family](arch, method, exs, batch, max_input, side)
            runs[side].append(r)
            print(
                f"  {arch} {method['name']} {side.name} (repeat {repeat + 1}/{repeats}): {r['epoch_seconds']:.1f} s",
                flush=True,
            )
    rows = []
    for side, rs in runs.items():
        seconds = sorted(r["epoch_seconds"] for r in rs)
        rows.append(
            {
                "arch": arch,
                "method": method["name"],
                "side": side.name,
                "family": side.family,
                "precision": side.precision,
                "checkpointing": side.checkpointing,
                "gradient_checkpointing": rs[0]["gradient_checkpointing"],
                "compiled": side.compiled,
                **(
                    {"first_epoch_seconds": statistics.median(r["first_epoch_seconds"] for r in rs)}
                    if "first_epoch_seconds" in rs[0]
                    else {}
                ),
                "epoch_seconds": statistics.median(seconds),
                "epoch_seconds_all": seconds,
                "spread": (seconds[-1] - seconds[0]) / statistics.median(seconds),
                "completion_tokens_per_s": completion / statistics.median(seconds),
            }
        )
    return rows


def eval_compare(arch: str, n: int, max_new: int, batch_sizes: tuple[int, ...]) -> dict:
    """tunelab's batched generation vs the course lab's per-example loop, greedy, same model and prompts.
    Also measures the bound: the prompts' forward passes alone (what any method with the loop's fp32
    arithmetic must also compute), so loop time / that time is the most batching can give."""
    tok = smol_tokenizer()
    model = make_model(arch).eval()
    if arch == "seq2seq":  # random weights emit EOS at once; hold both sides to max_new tokens, as a summary
        model.generation_config.min_new_tokens = max_new
    enc = PromptEncoder(tok, arch, arch == "causal", 320, 64)
    ts = TemplateSet("dialogue_summarization")
    exs = load_split(tunelab.build_config({}).data, "test")[:n]
    prompts = [enc.encode_for_generation(ts.eval, e) for e in exs]
    t = time.perf_counter()
    loop = []
    with torch.no_grad():
        for p in prompts:  # the course lab's loop: one example at a time
            ids = torch.tensor([p.input_ids])
            out = model.generate(input_ids=ids, max_new_tokens=max_new, do_sample=False)
            new_tokens = out[0, ids.shape[1] :] if arch == "causal" else out[0]
            loop.append(tok.decode(new_tokens, skip_special_tokens=True).strip())
    t_loop = time.perf_counter() - t
    with torch.no_grad():
        t = time.perf_counter()
        for p in prompts:
            ids = torch.tensor([p.input_ids])
            model(input_ids=ids, logits_to_keep=1) if arch == "causal" else model.get_encoder()(input_ids=ids)
        t_prompts = time.perf_counter() - t
    result = {
        "arch": arch,
        "examples": n,
        "max_new_tokens": max_new,
        "loop_ex_per_s": n / t_loop,
        "loop_seconds": t_loop,
        "prompt_forward_seconds": t_prompts,
        "fp32_bound": t_loop / t_prompts,
        "tunelab": [],
    }
    for bs, precision in [(b, "fp32") for b in batch_sizes] + [(max(batch_sizes), "auto")]:
        t = time.perf_counter()
        ours = generate_texts(
            model, tok, prompts, arch, batch_size=bs, max_new_tokens=max_new, show_progress=False, precision=precision
        )
        secs = time.perf_counter() - t
        identical = sum(a == b for a, b in zip(ours, loop))
        if precision == "fp32":  # like for like: batching must not change a single prediction
            assert identical == n, f"{arch} batch {bs}: {n - identical}/{n} predictions differ from the loop"
        result["tunelab"].append(
            {
                "batch_size": bs,
                "precision": resolve_precision(precision, CPU),
                "ex_per_s": n / secs,
                "speedup": t_loop / secs,
                "identical": identical,
            }
        )
    return result


def step_flops(model_params: int, head_params: int, tokens: int, kept: int, full: bool) -> float:
    k = 6 if full else 4  # frozen base: no weight gradients (2 fewer FLOPs per parameter per token)
    return k * (model_params - head_params) * tokens + k * head_params * kept


def gemm_peaks() -> dict[str, float]:
    """The best of three GEMM measurements per dtype (a peak: the machine's noise only lowers it)."""
    return {
        "fp32": max(gemm_flops(2048, 2048, 2048, torch.float32, reps=10, warmup=1) for _ in range(3)),
        "bf16": max(gemm_flops(2048, 2048, 2048, torch.bfloat16, reps=10, warmup=1) for _ in range(3)),
    }


def model_flop_utilisation(rows: list[dict], exs, max_input: int, peak: dict[str, float]) -> dict[str, dict]:
    """Model FLOPs per second of tunelab's causal steps over the measured GEMM peak of the same precision."""
    model = make_model("causal")
    n_params = sum(p.numel() for p in model.parameters())
    head = model.get_output_embeddings().weight.numel()
    enc = PromptEncoder(smol_tokenizer(), "causal", True, max_input, 64)
    train = encode_training_set(enc, exs, [TemplateSet("dialogue_summarization").eval] * len(exs))
    tokens = sum(len(e.input_ids) for e in train)
    kept = sum(sum(1 for x in e.labels if x != -100) for e in train)
    mfu = {}
    for r in rows:
        if r["arch"] == "causal" and r["family"] == "tunelab":
            flops = step_flops(n_params, head, tokens, kept, r["method"] == "full") / r["epoch_seconds"]
            mfu[r["method"] + r["side"].removeprefix("tunelab")] = {
                "model_tflops": flops / 1e12,
                "peak_tflops": peak[r["precision"]] / 1e12,
                "mfu": flops / peak[r["precision"]],
            }
    return mfu


def print_ratios(rows: list[dict]) -> None:
    speed = {(r["arch"], r["method"], r["side"]): r for r in rows}
    for arch, method in dict.fromkeys((r["arch"], r["method"]) for r in rows):
        cells = []
        for ours, theirs in [
            ("tunelab fp32", "reference fp32"),
            ("tunelab bf16", "reference bf16"),
            ("tunelab fp32 compiled", "reference fp32"),
            ("tunelab bf16 compiled", "reference bf16"),
            ("tunelab fp32", "trl fp32"),
            ("tunelab bf16", "trl bf16"),
            ("tunelab fp32 compiled", "trl fp32"),
            ("tunelab bf16 compiled", "trl bf16"),
            ("tunelab bf16 default", "trl bf16 default"),
        ]:
            a, b = speed.get((arch, method, ours)), speed.get((arch, method, theirs))
            if a and b:
                cells.append(f"{ours} / {theirs}: {a['completion_tokens_per_s'] / b['completion_tokens_per_s']:.2f}x")
        print(f"{arch:8} {method:5} " + "   ".join(cells), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer examples and one repeat (a smoke run)")
    ap.add_argument("--parts", default="train,eval", help="train, eval or both; a partial run updates the JSON")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of every training side (median, spread)")
    ap.add_argument("--archs", default="causal,seq2seq", help="the models trained and evaluated: causal, seq2seq")
    ap.add_argument("--out", help="the JSON written (default: bench/results/throughput.json, or _quick with --quick)")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    archs = [a for a in ("causal", "seq2seq") if a in args.archs.split(",")]
    n, batch, max_input = (8, 4, 192) if args.quick else (16, 4, 320)
    repeats = 1 if args.quick else args.repeats
    exs = examples(n)
    rows: list[dict] = []
    fresh: dict = {}
    if "train" in parts:
        peak_before = gemm_peaks()
        for arch in archs:
            for method in (LORA, {"name": "full"}):
                rows += measure_training(arch, method, exs, batch, max_input, repeats)
        peak_after = gemm_peaks()
        peak = {k: max(peak_before[k], peak_after[k]) for k in peak_before}
        mfu = model_flop_utilisation(rows, exs, max_input, peak) if "causal" in archs else {}  # causal steps only
        print_ratios(rows)
        print(f"GEMM peak: fp32 {peak['fp32'] / 1e12:.3f} TFLOP/s, bf16 {peak['bf16'] / 1e12:.3f} TFLOP/s")
        for k, v in mfu.items():
            print(f"MFU causal {k}: {v['model_tflops']:.3f} TFLOP/s of {v['peak_tflops']:.3f} = {100 * v['mfu']:.0f}%")
        fresh = {
            "train": rows,
            "train_setup": {"examples": n, "batch_size": batch, "timed_steps": n // batch, "repeats": repeats},
            "gemm_peak": {"before": peak_before, "after": peak_after},
            "mfu": mfu,
        }
    n_eval = 8 if args.quick else 32
    evals = (
        [eval_compare(arch, n_eval, 48, (4, 8) if args.quick else (16, 32)) for arch in archs]
        if "eval" in parts
        else []
    )
    for ev in evals:
        for r in ev["tunelab"]:
            print(
                f"evaluation {ev['arch']}: tunelab batch {r['batch_size']} {r['precision']}: {r['speedup']:.2f}x the "
                f"per-example loop ({r['ex_per_s']:.2f} vs {ev['loop_ex_per_s']:.2f} ex/s), identical predictions "
                f"{r['identical']}/{n_eval}",
                flush=True,
            )
        print(
            f"evaluation {ev['arch']} bound: the prompts' forward passes alone take {ev['prompt_forward_seconds']:.1f} s "
            f"of the loop's {ev['loop_seconds']:.1f} s, so no method with the loop's fp32 arithmetic exceeds "
            f"{ev['fp32_bound']:.2f}x",
            flush=True,
        )
    default_out = Path(__file__).parent / "results" / ("throughput_quick.json" if args.quick else "throughput.json")
    out = Path(args.out) if args.out else default_out
    out.parent.mkdir(exist_ok=True)
    kept_results = json.loads(out.read_text()) if out.exists() else {}
    from tunelab.environment import describe_environment

    if "eval" in parts:
        fresh["eval"] = evals
        fresh["eval_environment"] = describe_environment(torch.device("cpu"))
    elif "eval" in kept_results and "eval_environment" not in kept_results:  # measured with the previous train part
        fresh["eval_environment"] = kept_results["environment"]
    out.write_text(
        json.dumps(
            {
                **kept_results,
                "date": time.strftime("%Y-%m-%d"),
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "environment": describe_environment(torch.device("cpu")),
                "trl": _trl_version(),
                **fresh,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
