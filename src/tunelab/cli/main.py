"""The `tunelab` command line. Each command is a thin wrapper around a documented Python function."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from collections.abc import Sequence

from tunelab.errors import TunelabError
from tunelab.logs import configure_logging


def cmd_train(args: argparse.Namespace) -> int:
    from tunelab.config import load_config
    from tunelab.recipes import finetune

    cfg = load_config(args.config, args.set)
    finetune(cfg, run_path=args.run_dir, resume=args.resume)
    return 0


def _task_list(text: str | None) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()] if text else []


def cmd_eval(args: argparse.Namespace) -> int:
    from tunelab.errors import ConfigError
    from tunelab.recipes import evaluate
    from tunelab.recipes.evaluating import config_for_model
    from tunelab.reporting import before_after_table

    if (args.target is None) == (args.model is None):
        raise ConfigError("tunelab eval needs a config or run directory, or --model (not both)")
    if args.data and not args.model:
        raise ConfigError("--data goes with --model (a config names its own data)")
    target = args.target if args.model is None else config_for_model(args.model, args.data, args.name, tuple(args.set))
    overrides = tuple(args.set) if args.model is None else ()
    if args.tasks:
        from tunelab.recipes.benchmarking import benchmark, results_table

        out, results = benchmark(
            target,
            _task_list(args.tasks),
            args.limit,
            overrides,
            sample=args.sample,
            seed=args.seed,
            adapter=args.adapter,
        )
        print(results_table(results))
        print(f"\nresults: {out / 'benchmarks.json'}")
        return 0

    out, metrics = evaluate(
        target, split=args.split, max_samples=args.max_samples, overrides=overrides, adapter=args.adapter
    )
    print(before_after_table(None, metrics))
    print(f"\nresults: {out}")
    return 0


def _read_text(path: str | None) -> str:
    try:
        text = open(path, encoding="utf-8").read() if path else sys.stdin.read()
    except OSError as e:
        raise TunelabError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise TunelabError(f"{path or 'stdin'}: not UTF-8 text ({e})") from None
    if not text.strip():
        raise TunelabError(f"nothing to summarize: {path or 'stdin'} is empty")
    return text


def cmd_generate(args: argparse.Namespace) -> int:
    from tunelab.recipes import open_for_generation, summarize

    session = open_for_generation(model=args.model, run=args.run, adapter=args.adapter, overrides=args.set)
    text = _read_text(args.file)
    print(summarize(session, [text], max_new_tokens=args.max_new_tokens)[0])
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from tunelab.recipes import merge_run

    print(merge_run(args.run, args.out))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from tunelab.recipes.export import export_run

    result = export_run(args.run, args.out, to=args.to, dtype=args.dtype, adapter_only=args.adapter_only)
    for name, size in result.files.items():
        print(f"{result.out / name}  {size / 2**20:,.1f} MiB")
    print(f"{result.out / 'Modelfile'}  (ollama create NAME -f Modelfile); commands in {result.out / 'README.md'}")
    return 0


def cmd_prompt_tokens(args: argparse.Namespace) -> int:
    from tunelab.recipes import soft_prompt_neighbours

    print(
        f"nearest vocabulary tokens of each learned virtual token (cosine similarity of input embeddings, top {args.k})"
    )
    for i, row in enumerate(soft_prompt_neighbours(args.run, args.k)):
        print(
            f"virtual token {i:3d}: "
            + "  ".join(f"{json.dumps(tok, ensure_ascii=False)} cos {sim:.2f}" for tok, sim in row)
        )
    return 0


def cmd_forgetting(args: argparse.Namespace) -> int:
    from tunelab.benchmarks import forgetting_table
    from tunelab.recipes import measure_forgetting

    report = measure_forgetting(
        args.run, _task_list(args.tasks) or None, args.limit, sample=args.sample, seed=args.seed
    )
    print(forgetting_table(report))
    print(f"\nreport: {report['folder']}/forgetting.json")
    return 0


def cmd_data_preview(args: argparse.Namespace) -> int:
    from tunelab.config import load_config
    from tunelab.data.preview import MARK, PLAIN_MARK, format_preview, preview_data

    cfg = load_config(args.config, args.set)
    marks = MARK if sys.stdout.isatty() and not args.plain else PLAIN_MARK
    print(format_preview(preview_data(cfg, args.n, marks)))
    if marks == PLAIN_MARK:
        print(f"(trained tokens are between {PLAIN_MARK[0]} and {PLAIN_MARK[1]})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from tunelab.serving.server import ServeOptions, serve

    adapters = {}
    for item in args.adapter:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise TunelabError(f"--adapter expects NAME=PATH, got {item!r}")
        adapters[name] = path
    serve(
        ServeOptions(
            model=args.model,
            adapters=adapters,
            runs=args.runs,
            host=args.host,
            port=args.port,
            api_key=args.api_key,
            adapter_dirs=args.allow_adapter_loading,
            max_batch_size=args.max_batch_size,
            batch_window_ms=args.batch_window_ms,
            max_queue=args.max_queue,
            precision=args.precision,
            max_tokens=args.max_tokens_limit,
            max_prompt_tokens=args.max_prompt_tokens,
        )
    )
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from tunelab.benchmarks import available_tasks, get_task

    for name in available_tasks():
        spec = get_task(name)
        pool = f"eval set {spec.eval_pool}" if spec.eval_pool else "eval set: all"
        scored = f"first {spec.limit}" if spec.limit else (f"sample {spec.sample}" if spec.sample else "all")
        print(f"{name:16} {spec.kind:16} {pool:14} scored: {scored:11} {spec.description}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from tunelab.recipes import compare

    compare(args.config, tuple(args.set))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from tunelab.config import load_config
    from tunelab.recipes.sweeping import parse_grid, sweep

    record = sweep(load_config(args.config, args.set), parse_grid(args.set_grid), args.metric, widen=args.widen)
    best = record["best"]
    print(
        f"\nbest on the {record['split']} split ({record['metric']}, {record['better']} is better): "
        + ", ".join(f"{k}={v}" for k, v in best["overrides"].items())
        + f"  ({best[record['metric']]:.4f}, {best['run']})"
    )
    if record.get("best_at_edge"):
        print("the best still lies at an edge of the grid: the best value may lie beyond it")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from tunelab.reporting.html import write_report

    print(write_report(args.directory))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from tunelab.models import ALIASES, alias_dir, is_pulled, pull_model

    if args.action == "list":
        for a in ALIASES.values():
            state = f"pulled: {alias_dir(a.name)}" if is_pulled(a.name) else "not pulled"
            print(f"{a.name:24} {a.description} [{a.licence}; {state}]")
        return 0
    for name in args.names:
        print(pull_model(name, force=args.force))
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    from tunelab.allocator import preload_env

    if args.preload:
        env = preload_env({})
        if env is None:
            raise TunelabError("no allocator to preload: TUNELAB_ALLOCATOR=system, or cmeel-mimalloc is not installed")
        for key, value in env.items():
            print(f"export {key}={value}")
        return 0
    from tunelab.environment import describe_environment
    from tunelab.models import pick_device

    print(json.dumps(describe_environment(pick_device()), indent=2))
    return 0


def cmd_templates(args: argparse.Namespace) -> int:
    from tunelab.data.templates import TEMPLATES

    for task, phrasings in TEMPLATES.items():
        print(f"{task}:")
        for i, t in enumerate(phrasings):
            print(f"  [{i}] {json.dumps(t.prompt)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    verbosity = argparse.ArgumentParser(add_help=False)
    loudness = verbosity.add_mutually_exclusive_group()
    loudness.add_argument(
        "-v",
        "--verbose",
        action="store_const",
        const=1,
        dest="verbosity",
        default=argparse.SUPPRESS,
        help="also show debug notes and the libraries' warnings (transformers, peft, ...)",
    )
    loudness.add_argument(
        "-q",
        "--quiet",
        action="store_const",
        const=-1,
        dest="verbosity",
        default=argparse.SUPPRESS,
        help="only warnings and errors on stderr",
    )
    p = argparse.ArgumentParser(
        prog="tunelab", description="Instruction fine-tuning and evaluation of language models.", parents=[verbosity]
    )
    sub = p.add_subparsers(dest="command", required=True)

    def add_parser(name: str, **kwargs) -> argparse.ArgumentParser:  # -v / -q after the command too
        return sub.add_parser(name, parents=[verbosity], **kwargs)

    def add_set(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config key, e.g. --set training.lr=1e-4 (repeatable)",
        )

    def add_subset(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--limit", type=int, help="score the first N documents of each task (as lm-eval's --limit)")
        sp.add_argument("--sample", type=int, help="or score a seeded sample of N documents of each task")
        sp.add_argument("--seed", type=int, help="seed of --sample (default: each task's own)")

    t = add_parser("train", help="fine-tune: evaluate before, train, evaluate after")
    t.add_argument("config", nargs="?", help="experiment YAML (default: the built-in demo config)")
    t.add_argument("--run-dir", help="run directory (default: <output_dir>/<name>)")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue an unfinished run directory from its latest checkpoint (or start it)",
    )
    add_set(t)
    t.set_defaults(func=cmd_train)

    e = add_parser("eval", help="evaluate a config's base model or a finished run directory")
    e.add_argument("target", nargs="?", help="experiment YAML or run directory (or use --model)")
    e.add_argument("--model", help="score this model (alias, folder, .gguf or hub id) without a config")
    e.add_argument("--adapter", help="a PEFT adapter folder applied to --model (or to a config's base)")
    e.add_argument("--data", help="with --model: a data file (any layout tunelab reads) scored as the test split")
    e.add_argument("--name", help="with --model: the result folder's name under runs/ (numbered if taken)")
    e.add_argument("--split")
    e.add_argument("--max-samples", type=int)
    e.add_argument(
        "--tasks",
        help="comma-separated benchmark tasks (names from `tunelab tasks`, or paths of task "
        ".yaml files) instead of the summarization eval",
    )
    add_subset(e)
    add_set(e)
    e.set_defaults(func=cmd_eval)

    g = add_parser("generate", help="summarize a dialogue from a file or stdin")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--model", help="base model: alias, folder, .gguf or hub id")
    src.add_argument("--run", help="a finished run directory")
    g.add_argument("--adapter", help="a PEFT adapter folder to apply to --model")
    g.add_argument("--file", help="read the text from this file (default: stdin)")
    g.add_argument("--max-new-tokens", type=int)
    add_set(g)
    g.set_defaults(func=cmd_generate)

    mg = add_parser("merge", help="merge a run's LoRA adapter into its (full-precision) base model")
    mg.add_argument("run", help="a finished run directory with an adapter/")
    mg.add_argument("--out", required=True, help="folder for the merged standalone model (must not exist)")
    mg.set_defaults(func=cmd_merge)

    ex = add_parser("export", help="export a causal run as GGUF for llama.cpp and Ollama (with a Modelfile)")
    ex.add_argument("run", help="a finished run directory (LoRA, QLoRA, IA3 or full fine-tuning)")
    ex.add_argument("--to", default="gguf", choices=["gguf"], help="format (default: gguf)")
    ex.add_argument("--out", required=True, help="folder for the export (must not exist)")
    ex.add_argument(
        "--dtype",
        default="f16",
        choices=["f32", "f16", "bf16", "q8_0"],
        help="weight type of the GGUF file (default: f16; norms stay f32)",
    )
    ex.add_argument(
        "--adapter-only",
        action="store_true",
        help="LoRA runs: write the base and the adapter as separate files (llama.cpp --lora, Ollama "
        "ADAPTER) instead of one merged model",
    )
    ex.set_defaults(func=cmd_export)

    pt = add_parser("prompt-tokens", help="nearest vocabulary tokens of each learned soft-prompt token")
    pt.add_argument("run", help="a finished prompt-tuning run directory")
    pt.add_argument("-k", type=int, default=5)
    pt.set_defaults(func=cmd_prompt_tokens)

    cp = add_parser("compare", help="run every arm of a comparison config and write report.html/report.md")
    cp.add_argument("config")
    add_set(cp)
    cp.set_defaults(func=cmd_compare)

    sw = add_parser("sweep", help="one run per grid point, scored on the validation split; names the best")
    sw.add_argument("config")
    sw.add_argument(
        "--set-grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        required=True,
        help="values to try, e.g. --set-grid training.lr=1e-4,3e-4,1e-3 (repeatable: the product)",
    )
    sw.add_argument(
        "--metric",
        default="eval_loss",
        choices=["eval_loss", "rouge1", "rouge2", "rougeL", "rougeLsum"],
        help="validation metric that picks the best (default eval_loss)",
    )
    sw.add_argument(
        "--widen",
        type=int,
        default=0,
        metavar="N",
        help="when the best value lies at an edge of a one-key grid, try up to N more past it, continuing the "
        "grid's steps (default 0)",
    )
    add_set(sw)
    sw.set_defaults(func=cmd_sweep)

    rp = add_parser("report", help="rebuild report.html/report.md from a comparison directory")
    rp.add_argument("directory")
    rp.set_defaults(func=cmd_report)

    fg = add_parser("forgetting", help="benchmark suite on a run's base and fine-tuned model, with deltas")
    fg.add_argument("run")
    fg.add_argument("--tasks", help="comma-separated tasks (default: the run's benchmarks.tasks)")
    add_subset(fg)
    fg.set_defaults(func=cmd_forgetting)

    dt = add_parser("data", help="look at training data as the model will see it")
    dt.add_argument("action", choices=["preview"])
    dt.add_argument("config", nargs="?", help="experiment YAML (default: the built-in demo config)")
    dt.add_argument("-n", type=int, default=5, help="examples to show (default 5)")
    dt.add_argument("--plain", action="store_true", help="mark trained tokens with ⟦ ⟧ even on a terminal")
    add_set(dt)
    dt.set_defaults(func=cmd_data_preview)

    sv = add_parser("serve", help="serve a base model and task adapters behind an OpenAI-compatible API")
    sv.add_argument("runs", nargs="*", help="run directories (adapters named by the run; full runs as own models)")
    sv.add_argument("--model", help="the base model (default: the runs' base)")
    sv.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH", help="a PEFT adapter (repeatable)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (not loopback: needs an API key)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--api-key", help="required as 'Authorization: Bearer KEY' on /v1 (or $TUNELAB_API_KEY)")
    sv.add_argument(
        "--allow-adapter-loading",
        action="append",
        default=[],
        metavar="DIR",
        help="enable /v1/load_lora_adapter for adapters under DIR (repeatable)",
    )
    sv.add_argument("--max-batch-size", type=int, default=16)
    sv.add_argument("--batch-window-ms", type=float, default=15.0, help="how long a batch waits for more requests")
    sv.add_argument("--max-queue", type=int, default=64, help="waiting requests beyond this get HTTP 429")
    sv.add_argument(
        "--precision",
        choices=["fp32", "bf16", "auto"],
        default="fp32",
        help="fp32 (default): a greedy answer is the same alone or in any batch",
    )
    sv.add_argument("--max-tokens-limit", type=int, default=1024, help="largest max_tokens a request may ask")
    sv.add_argument("--max-prompt-tokens", type=int, default=4096)
    sv.set_defaults(func=cmd_serve)

    tk = add_parser("tasks", help="list the benchmark tasks")
    tk.add_argument("action", choices=["list"], nargs="?", default="list")
    tk.set_defaults(func=cmd_tasks)

    m = add_parser("models", help="built-in offline models")
    m.add_argument("action", choices=["list", "pull"])
    m.add_argument("names", nargs="*", default=["smollm2-135m-instruct"])
    m.add_argument("--force", action="store_true", help="pull again even if cached")
    m.set_defaults(func=cmd_models)

    en = add_parser("env", help="what results depend on here: processor, threads, library versions, allocator")
    en.add_argument(
        "--preload", action="store_true", help="print the variables that start another process on tunelab's allocator"
    )
    en.set_defaults(func=cmd_env)

    tp = add_parser("templates", help="list the instruction templates")
    tp.add_argument("action", choices=["list"], nargs="?", default="list")
    tp.set_defaults(func=cmd_templates)
    return p


# Commands that load a model; run as the `tunelab` program they restart once on tunelab's allocator (allocator.py).
MODEL_COMMANDS = frozenset(
    {"train", "eval", "generate", "merge", "export", "prompt-tokens", "compare", "sweep", "forgetting", "serve", "env"}
)


def loads_models(args: argparse.Namespace) -> bool:
    return args.command in MODEL_COMMANDS or (args.command == "models" and args.action == "pull")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(getattr(args, "verbosity", 0))
    try:
        if argv is None and loads_models(args):  # the program itself, not a call from Python
            from tunelab.allocator import restart_with_allocator

            restart_with_allocator()
        return args.func(args)
    except TunelabError as e:
        print(f"tunelab: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `tunelab tasks | head`: the reader left; not an error (before OSError: a subclass)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        print(
            f"tunelab: error: no space left on the device{f' writing {e.filename}' if e.filename else ''}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("tunelab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
