"""The README's measured numbers, rendered from committed results so they are regenerated, never hand-edited.

Each generated region of README.md sits between `<!-- numbers:NAME -->` and `<!-- /numbers:NAME -->` and is
rendered from bench/results/ (each result names the machine it was measured on):

    study    bench/results/study.json    (collected from results/dialogsum-study by --collect-study; make study)
    demo     bench/results/demo.json     (collected from runs/dialogsum-compare by --collect-demo)
    demo_lora  bench/results/demo_lora.json  (collected from the newest runs/dialogsum-lora-* by --collect-demo-lora)
    serve    bench/results/serve.json    (python bench/serve.py)
    export   bench/results/export.json   (python bench/export.py)
    lm_eval  bench/results/lm_eval_agreement.json  (python bench/lm_eval_agreement.py)
    methods  bench/results/methods.json  (python bench/methods.py)
    demo_memory  bench/results/demo_memory.json  (python bench/demo_memory.py)
    throughput  bench/results/throughput.json  (python bench/throughput.py)
    throughput_amd  bench/results/throughput_{causal,seq2seq}_amd.json  (python bench/throughput.py --parts train
                    --archs causal|seq2seq --out ...)
    startup  bench/results/startup.json  (python bench/startup.py)

    python bench/readme_numbers.py [--collect-study] [--collect-demo]   # rewrite the regions (make readme-numbers runs it all)
    python bench/readme_numbers.py --check            # exit 1 if README.md differs from the results
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"
sys.path.insert(0, str(ROOT / "src"))

from tunelab.io import atomic_write_text  # noqa: E402  (light: no torch)


def machine_line(env: dict) -> str:
    cpu = env.get("cpu") or {}
    parts = [f"{cpu.get('model', 'unknown CPU')} ({', '.join(cpu.get('isa') or []) or 'no AVX-512/AMX'})"]
    if env.get("torch_threads"):
        parts.append(f"{env['torch_threads']} threads")
    if torch := (env.get("packages") or {}).get("torch"):
        parts.append(f"torch {torch}")
    return ", ".join(parts)


def collect_demo(directory: Path) -> dict:
    """The comparison's summary table and the machine it ran on, from the demo's run directories."""
    from tunelab.reporting.html import SUMMARY_HEADERS, load_arms, summary_rows
    from tunelab.reporting.tables import markdown_table

    arms = load_arms(directory)
    finished = max((a.path / "COMPLETE").stat().st_mtime for a in arms if (a.path / "COMPLETE").exists())
    env = next((a.metrics["environment"] for a in arms if a.training and "environment" in a.metrics), {})
    return {
        "table": markdown_table(SUMMARY_HEADERS, summary_rows(arms)),
        "machine": machine_line(env),
        "precision": env.get("precision"),
        "date": time.strftime("%Y-%m-%d", time.gmtime(finished)),
    }


STUDY = ROOT / "results" / "dialogsum-study"
LAB_FULL_FINE_TUNING_ROUGE1 = 42.16  # the course lab's full-fine-tuned FLAN-T5-base, one reference per test row


def collect_study(directory: Path, claims: bool = True) -> dict:
    """The study's headline table (every arm of its config, pending ones marked), its claims as judged in its
    report (judged again from the predictions: ~30 s; `claims=False` leaves them out), the best PEFT arm on the lab's
    protocol, and the machines and wall time, from its committed results."""
    from tunelab.reporting.claims import CLAIM_HEADERS, claim_rows, judge_claims
    from tunelab.reporting.html import ARM_ORDER_FILE, HEADLINE_HEADERS, headline_rows, load_arms
    from tunelab.reporting.tables import markdown_table

    arms = load_arms(directory)
    order = json.loads((directory / ARM_ORDER_FILE).read_text())
    pending = [name for name in order if name not in {a.name for a in arms}]
    trained = [a for a in arms if a.training]
    machines: dict[str, list[str]] = {}  # a long study can span sessions on different machines
    for a in arms:
        if "environment" in a.metrics:
            machines.setdefault(machine_line(a.metrics["environment"]), []).append(a.name)
    env = next((a.metrics["environment"] for a in trained if "environment" in a.metrics), {})
    peft = [a for a in trained if a.method != "full" and a.after.get("rouge_single_reference")]
    best = max(peft, key=lambda a: a.after["rouge_single_reference"]["rouge1"]["f1"], default=None)
    timing = json.loads((directory / "timing.json").read_text())
    finished = [timing[a.name]["finished"][:10] for a in arms if a.name in timing]
    study = {
        "table": markdown_table(HEADLINE_HEADERS, headline_rows(arms, pending)),
        "finished": len(arms),
        "arms": len(order),
        "pending": pending,
        "test_examples": arms[0].after.get("examples"),
        "best_peft": None
        if best is None
        else {"arm": best.name, **{k: best.after["rouge_single_reference"]["rouge1"][k] for k in ("f1", "f1_ci95")}},
        "hours": sum(t["seconds"] for t in timing.values()) / 3600,
        "dates": [min(finished), max(finished)] if finished else [],
        "machines": machines,
        "precision": env.get("precision"),
    }
    if claims:
        study["claims"] = markdown_table(CLAIM_HEADERS, claim_rows(judge_claims(directory, arms)))
    return study


def render_study() -> str:
    study = json.loads((RESULTS / "study.json").read_text())
    precision = study.get("precision") or {}
    progress = (
        f"{study['finished']} of {study['arms']} arms finished; not finished yet: {', '.join(study['pending'])} "
        f"(`make study` continues where it stopped)."
        if study["pending"]
        else f"All {study['arms']} arms finished."
    )
    best = study["best_peft"]
    target = (
        f"Best PEFT arm on the lab's protocol (ROUGE-1, one reference per row): {best['arm']} {best['f1']:.2f} "
        f"[{best['f1_ci95'][0]:.2f}, {best['f1_ci95'][1]:.2f}], against {LAB_FULL_FINE_TUNING_ROUGE1} for the course "
        f"lab's full-fine-tuned FLAN-T5-base ({'above' if best['f1'] > LAB_FULL_FINE_TUNING_ROUGE1 else 'not above'} "
        "it)."
        if best
        else ""
    )
    first, last = study["dates"] or ["?", "?"]
    machines = "; ".join(f"{', '.join(names)} on {machine}" for machine, names in study["machines"].items())
    return (
        f"{study['table'].rstrip()}\n\n{progress} {target}\n\n"
        "ROUGE is F1 x100 with 95% CIs over the test dialogues: best of the three references (tunelab's protocol) "
        "and the mean over single references (the lab's, which scores each reference as its own row). MMLU change: "
        "after - before training on 1,000 questions, with its paired 95% CI (negative = forgetting); benchmark "
        "change: the mean change over MMLU, BoolQ, SST-2 and SAMSum (a neighbouring summarization task, where "
        "gains are expected). Learning rates were chosen by a sweep on the validation split. Train "
        "time is wall time as each arm ran, at low priority beside other work and not always on the same machine: "
        "compare methods' speed with the throughput bench below, not with this column. Every arm's difference "
        "from zero-shot on each ROUGE metric, with its paired 95% CI, is in the study's report "
        "(`results/dialogsum-study/report.md`, *Against zero-shot, paired*).\n\n"
        f"{study['claims'].rstrip()}\n\n"
        f"`make study` ({study['test_examples']} test dialogues), {first} to {last}, {study['hours']:.1f} h of the arms' wall time; "
        f"{machines}; training in {precision.get('training', '?')}, generation in "
        f"{precision.get('generation', '?')}."
    )


def collect_demo_lora(runs: Path) -> dict:
    """Before/after and cost tables of the newest finished `make demo-lora` run."""
    from tunelab.reporting.tables import before_after_table, cost_table

    finished = sorted(
        (p for p in runs.glob("dialogsum-lora-*") if (p / "COMPLETE").exists()),
        key=lambda p: (p / "COMPLETE").stat().st_mtime,
    )
    if not finished:
        raise SystemExit(f"no finished dialogsum-lora-* run in {runs}: run make demo-lora first")
    metrics = json.loads((finished[-1] / "metrics.json").read_text())
    env = metrics.get("environment") or {}
    return {
        "run": finished[-1].name,
        "examples": metrics["after"].get("examples"),
        "metrics": before_after_table(metrics.get("before"), metrics["after"]),
        "cost": cost_table(metrics["cost"], metrics.get("training")),
        "machine": machine_line(env),
        "precision": env.get("precision"),
        "date": time.strftime("%Y-%m-%d", time.gmtime((finished[-1] / "COMPLETE").stat().st_mtime)),
    }


def render_demo_lora() -> str:
    run = json.loads((RESULTS / "demo_lora.json").read_text())
    precision = run.get("precision") or {}
    return (
        f"{run['metrics'].rstrip()}\n\n{run['cost'].rstrip()}\n\n`make demo-lora` ({run['run']}) on {run['date']}, "
        f"{run['examples']} test dialogues: {run['machine']}; training in {precision.get('training', '?')}, "
        f"generation in {precision.get('generation', '?')}."
    )


def render_demo() -> str:
    demo = json.loads((RESULTS / "demo.json").read_text())
    precision = demo.get("precision") or {}
    return (
        f"{demo['table'].rstrip()}\n\nMeasured by `make demo` on {demo['date']}: {demo['machine']}; training in "
        f"{precision.get('training', '?')}, generation in {precision.get('generation', '?')}."
    )


def render_export() -> str:
    data = json.loads((RESULTS / "export.json").read_text())
    table = (RESULTS / "export.md").read_text().strip()
    pair = data.get("adapter_only_f16")
    lines = [table, ""]
    if pair:
        same = pair["vs_merged_f16"]
        lines.append(
            f"Base f16 + LoRA file ({pair['adapter_mib']} MiB) in llama.cpp: {same['exact']}/{same['of']} "
            f"outputs identical to the merged f16 file."
        )
    lines.append(
        f"`python bench/export.py` on {data['prompts']} DialogSum test dialogues (greedy, at most "
        f"{data['max_new_tokens']} new tokens), {machine_line(data['machine'])}, llama-cpp-python "
        f"{data.get('llama_cpp_python') or 'not installed'}."
    )
    return "\n".join(lines)


def render_serve() -> str:
    from tunelab.reporting.tables import human_bytes

    data = json.loads((RESULTS / "serve.json").read_text())
    s, c = data["one_at_a_time"], data["concurrent"]
    rows = [
        f"| one at a time | {s['requests_per_second']:.2f} | {s['tokens_per_second']:.1f} | "
        f"{s['p50_latency_s']:.1f} s | {s['p95_latency_s']:.1f} s |",
        f"| {data['clients']} concurrent clients | {c['requests_per_second']:.2f} | {c['tokens_per_second']:.1f} | "
        f"{c['p50_latency_s']:.1f} s | {c['p95_latency_s']:.1f} s |",
        f"| ratio | **{data['throughput_ratio']:.2f}x** | {c['tokens_per_second'] / s['tokens_per_second']:.2f}x | | |",
    ]
    lines = [
        "| | requests/s | tokens/s | p50 latency | p95 latency |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Answers identical both ways: {data['identical_outputs']}.",
    ]
    if memory := data.get("memory"):
        lines[-1] += (
            f" Memory (resident, each in its own process): one base + 8 adapters "
            f"{human_bytes(memory['base_plus_8_adapters_rss_bytes'])} vs 8 merged models "
            f"{human_bytes(memory['8_merged_models_rss_bytes'])} ({memory['ratio']:.2f}x)."
        )
    lines.append(
        f"(`python bench/serve.py` on {data['date']}: {machine_line({'cpu': data.get('cpu')})}; {data['precision']}.)"
    )
    return "\n".join(lines)


LM_EVAL_TASKS = {"boolq": "BoolQ", "copa": "COPA", "sst2": "SST-2", "mmlu": "MMLU (geography, marketing)"}


def render_lm_eval() -> str:
    data = json.loads((RESULTS / "lm_eval_agreement.json").read_text())
    lines = [
        "| task | shots | n | tunelab accuracy | lm-eval accuracy | same prediction | "
        "max abs. log-likelihood difference | time tunelab / lm-eval |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {LM_EVAL_TASKS.get(r['task'], r['task'])} | {r['shots']} | {r['n']} | "
            f"{r['tunelab_accuracy']:.1f} | {r['lm_eval_accuracy']:.1f} | {r['same_prediction']}/{r['n']} | "
            f"{r['max_loglik_diff']:.1e} | {r['tunelab_seconds'] / r['lm_eval_seconds']:.2f} |"
        )
    machine = f", {machine_line(data['environment'])}" if data.get("environment") else ""
    lines += [
        "",
        f"(lm-eval {data.get('lm_eval_version', '?')}, {data.get('precision', 'fp32')}, {data['date']}{machine}.)",
    ]
    return "\n".join(lines)


METHOD_LABELS = {
    "lora": "lora (r 16, all-linear)",
    "qlora": "qlora (NF4, bf16 compute)",
    "prompt_tuning": "prompt_tuning (20 tokens)",
}


def render_methods() -> str:
    """bench/methods.py: each method as tunelab trains it by default (checkpointing and compile `auto`, mimalloc) and
    eager (compile off), as ratios to full fine-tuning under the same settings, with the peaks on glibc beside."""
    data = json.loads((RESULTS / "methods.json").read_text())
    rows = {(r["method"], r["checkpointing"], r["compile"], r["allocator"]): r for r in data["rows"]}
    default, system = "mimalloc", "glibc"
    full, full_eager = rows[("full", "auto", "auto", default)], rows[("full", "auto", "off", default)]

    def ratio(r: dict, ref: dict, key: str, unit: str, scale: float = 1.0) -> str:
        value = f"{r[key] / scale:.2f} {unit}"
        return f"1.00 ({value})" if r is ref else f"{r[key] / ref[key]:.2f} ({value})"

    def gib(r: dict) -> str:
        return f"{r['peak_rss_bytes'] / 2**30:.2f}"

    lines = [
        "| method | trainable % | checkpointing / compiled (auto) | step / full | peak memory / full | eager: step / "
        "full | eager: peak memory / full | peak GiB on glibc: default / eager |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (method, checkpointing, compile_setting, allocator), r in rows.items():
        if (checkpointing, compile_setting, allocator) != ("auto", "auto", default):
            continue
        eager = rows[(method, "auto", "off", default)]
        on_glibc = f"{gib(rows[(method, 'auto', 'auto', system)])} / {gib(rows[(method, 'auto', 'off', system)])}"
        lines.append(
            f"| {METHOD_LABELS.get(method, method)} | {r['trainable_percent']:.3f} | "
            f"{'on' if r['recomputed'] else 'off'} / {'yes' if r['compiled'] else 'no'} | "
            f"{ratio(r, full, 'step_seconds', 's')} | {ratio(r, full, 'peak_rss_bytes', 'GiB', 2**30)} | "
            f"{ratio(eager, full_eager, 'step_seconds', 's')} | "
            f"{ratio(eager, full_eager, 'peak_rss_bytes', 'GiB', 2**30)} | {on_glibc} |"
        )
    shape = " x ".join(map(str, full["batch_shape"]))
    lines += [
        "",
        f"(`python bench/methods.py`, batch {shape}, median of {len(full['step_seconds_all'])} steps after one "
        f"warm-up, {data['date']}, {machine_line(data['environment'])}; `bench/results/methods.md`.)",
    ]
    return "\n".join(lines)


def render_demo_memory() -> str:
    """bench/demo_memory.py: the demo as tunelab ran it before the memory work of issue #15 and now, side by side."""
    text = (RESULTS / "demo_memory.md").read_text()
    return text.split("\n", 2)[2].strip() + "\n\n(`python bench/demo_memory.py`; `bench/results/demo_memory.md`.)"


TRAIN_LABELS = {"causal": "SmolLM2-135M (causal)", "seq2seq": "T5, flan-t5-small shape (seq2seq)"}


def render_throughput() -> str:
    return throughput_table(json.loads((RESULTS / "throughput.json").read_text()), "`make throughput`")


def render_throughput_amd() -> str:
    """The same table from the two part runs on the AMD EPYC (causal after padding-free, seq2seq after fast dropout)."""
    causal, seq2seq = (json.loads((RESULTS / f"throughput_{arch}_amd.json").read_text()) for arch in TRAIN_LABELS)
    repeats = f"{causal['train_setup']['repeats']} (causal) and {seq2seq['train_setup']['repeats']} (seq2seq)"
    merged = {**causal, "train": causal["train"] + seq2seq["train"]}
    merged["train_setup"] = {**causal["train_setup"], "repeats": repeats}
    return throughput_table(merged, "`python bench/throughput.py --parts train --archs causal|seq2seq`")


def throughput_table(data: dict, command: str) -> str:
    rows = {(r["arch"], r["method"], r["side"]): r for r in data["train"]}
    lines = [
        "| model | method | vs course recipe, fp32 | vs course recipe, bf16 | vs TRL SFTTrainer, fp32 | "
        "vs TRL SFTTrainer, bf16 | defaults, bf16: tunelab vs TRL | compilation (first epoch) | largest spread |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def ratio(arch: str, method: str, ours: str, theirs: str) -> str:
        a, b = rows.get((arch, method, ours)), rows.get((arch, method, theirs))
        return f"{a['completion_tokens_per_s'] / b['completion_tokens_per_s']:.2f}x" if a and b else "—"

    def eager_and_compiled(arch: str, method: str, precision: str, theirs: str) -> str:
        eager = ratio(arch, method, f"tunelab {precision}", f"{theirs} {precision}")
        compiled = ratio(arch, method, f"tunelab {precision} compiled", f"{theirs} {precision}")
        return eager if compiled == "—" else f"{eager} / **{compiled}**"

    def compilation(arch: str, method: str) -> str:
        eager, compiled = rows.get((arch, method, "tunelab bf16")), rows.get((arch, method, "tunelab bf16 compiled"))
        if not (eager and compiled and "first_epoch_seconds" in compiled):
            return "—"
        return f"{compiled['first_epoch_seconds'] - eager['first_epoch_seconds']:+.0f} s"

    for arch, method in dict.fromkeys((r["arch"], r["method"]) for r in data["train"]):
        spread = max(r["spread"] for r in data["train"] if (r["arch"], r["method"]) == (arch, method))
        lines.append(
            f"| {TRAIN_LABELS[arch]} | {'LoRA' if method == 'lora' else method} | "
            f"{eager_and_compiled(arch, method, 'fp32', 'reference')} | "
            f"{eager_and_compiled(arch, method, 'bf16', 'reference')} | "
            f"{eager_and_compiled(arch, method, 'fp32', 'trl')} | "
            f"{eager_and_compiled(arch, method, 'bf16', 'trl')} | "
            f"{ratio(arch, method, 'tunelab bf16 default', 'trl bf16 default')} | {compilation(arch, method)} | "
            f"{spread:.0%} |"
        )
    setup = data["train_setup"]
    lines += [
        "",
        f"({command}, {data['date']}, {machine_line(data['environment'])}, TRL {data.get('trl')}; "
        f"{setup['examples']} DialogSum examples, batch {setup['batch_size']}, the second epoch "
        f"({setup['timed_steps']} steps) timed, median of {setup['repeats']} interleaved repeats; cells with two "
        "ratios: tunelab eager / **compiled** (`training.compile`); compilation = the compiled side's first epoch "
        "minus the eager side's, bf16 (median: after the first repeat inductor's on-disk cache is warm; negative where "
        "the faster steps repay it within the epoch); spread = (slowest - fastest) / median of a side's repeats.)",
    ]
    return "\n".join(lines)


EVAL_LABELS = {
    "seq2seq": "T5 of flan-t5-small's shape (seq2seq, the course lab's family)",
    "causal": "SmolLM2-135M-Instruct (causal)",
}


def render_generation() -> str:
    data = json.loads((RESULTS / "throughput.json").read_text())
    rows = sorted(data["eval"], key=lambda r: r["arch"] != "seq2seq")
    sides = [(t["batch_size"], t["precision"]) for t in rows[0]["tunelab"]]
    head = " | ".join(f"tunelab batch {b}, {p}" for b, p in sides)
    lines = [f"| model | {head} | fp32 bound |", "|---|" + "---|" * (len(sides) + 1)]
    for r in rows:
        cells = " | ".join(f"{t['speedup']:.2f}x, {t['identical']}/{r['examples']} identical" for t in r["tunelab"])
        lines.append(f"| {EVAL_LABELS[r['arch']]} | {cells} | {r['fp32_bound']:.1f}x |")
    env = data.get("eval_environment", data["environment"])
    return "\n".join([*lines, "", f"(`python bench/throughput.py --parts eval`, {machine_line(env)}.)"])


def render_bound() -> str:
    causal = next(e for e in json.loads((RESULTS / "throughput.json").read_text())["eval"] if e["arch"] == "causal")
    return (
        f"The bound is measured in the same run: the prompts' forward passes alone (what any method with the "
        f"loop's fp32 arithmetic must also compute) take {causal['prompt_forward_seconds']:.1f} s of the causal "
        f"loop's {causal['loop_seconds']:.1f} s, so batching can never give more than {causal['fp32_bound']:.1f}x "
        "there even if decoding were free."
    )


def render_mfu() -> str:
    data = json.loads((RESULTS / "throughput.json").read_text())
    mfu = data["mfu"]
    where = machine_line(data["environment"]) if data.get("environment") else data["machine_note"]

    def share(key: str) -> str:
        return f"{mfu[key]['mfu']:.0%}" if key in mfu else "—"

    return (
        f"Hardware bound: measured GEMM peak {mfu['lora fp32']['peak_tflops']:.3f} TFLOP/s fp32 and "
        f"{mfu['lora bf16']['peak_tflops']:.3f} TFLOP/s bf16 ({where}). Share of the peak a training step reaches "
        "(model FLOPs: 4 per frozen parameter per token, 6 for full fine-tuning, the vocabulary projection counted "
        "only at completion positions), eager / compiled: LoRA "
        f"{share('lora fp32')} / {share('lora fp32 compiled')} of the fp32 peak and "
        f"{share('lora bf16')} / {share('lora bf16 compiled')} of the bf16 peak; full fine-tuning "
        f"{share('full fp32')} / {share('full fp32 compiled')} and {share('full bf16')} / "
        f"{share('full bf16 compiled')} (`python bench/throughput.py`, {data['date']})."
    )


def render_startup() -> str:
    data = json.loads((RESULTS / "startup.json").read_text())
    rows = [
        [name, f"{r['median_s'] * 1000:.0f} ms", f"{r['ratio_to_python']:.1f}x"]
        for name, r in data.items()
        if isinstance(r, dict) and "median_s" in r
    ]
    from tunelab.reporting.tables import markdown_table

    return markdown_table(["command", "median", "vs python -c pass"], rows)


RENDERERS: dict[str, Callable[[], str]] = {
    "study": render_study,
    "demo": render_demo,
    "demo_lora": render_demo_lora,
    "demo_memory": render_demo_memory,
    "serve": render_serve,
    "export": render_export,
    "lm_eval": render_lm_eval,
    "methods": render_methods,
    "throughput": render_throughput,
    "throughput_amd": render_throughput_amd,
    "generation": render_generation,
    "bound": render_bound,
    "mfu": render_mfu,
    "startup": render_startup,
}


def rendered_readme(text: str) -> str:
    def block(m: re.Match) -> str:
        name = m.group(1)
        if name not in RENDERERS:
            raise SystemExit(f"README.md has a numbers region {name!r} that no renderer knows")
        return f"<!-- numbers:{name} -->\n{RENDERERS[name]().rstrip()}\n<!-- /numbers:{name} -->"

    return re.sub(r"<!-- numbers:(\w+) -->\n.*?<!-- /numbers:\1 -->", block, text, flags=re.S)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--collect-demo",
        nargs="?",
        const=str(ROOT / "runs" / "dialogsum-compare"),
        metavar="DIR",
        help="first read the demo's comparison (default runs/dialogsum-compare)",
    )
    parser.add_argument("--collect-study", action="store_true", help="first read results/dialogsum-study (make study)")
    parser.add_argument("--collect-demo-lora", action="store_true", help="first read the newest runs/dialogsum-lora-*")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    args = parser.parse_args()
    if args.collect_demo:
        atomic_write_text(RESULTS / "demo.json", json.dumps(collect_demo(Path(args.collect_demo)), indent=2) + "\n")
    if args.collect_study:
        atomic_write_text(RESULTS / "study.json", json.dumps(collect_study(STUDY), indent=2) + "\n")
    if args.collect_demo_lora:
        atomic_write_text(RESULTS / "demo_lora.json", json.dumps(collect_demo_lora(ROOT / "runs"), indent=2) + "\n")
    text = README.read_text(encoding="utf-8")
    new = rendered_readme(text)
    if args.check:
        if new != text:
            print("README.md's numbers differ from bench/results: run python bench/readme_numbers.py", file=sys.stderr)
            return 1
        return 0
    if new != text:
        atomic_write_text(README, new)
    print("README.md numbers " + ("updated" if new != text else "already current"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
