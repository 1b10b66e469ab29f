"""`tunelab serve`: build the pool of models, the batching engine and the API, and run them under uvicorn.

Binds 127.0.0.1 by default; any other address needs an API key (`--api-key` or TUNELAB_API_KEY), checked as a
Bearer token on every /v1 route. SIGTERM (or Ctrl-C) stops accepting connections, lets the requests in flight
finish, then exits."""

from __future__ import annotations

import ipaddress
import os
import signal
from typing import Any
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.errors import ConfigError, ModelError
from tunelab.logs import logger

API_KEY_ENV = "TUNELAB_API_KEY"


@dataclass
class ServeOptions:
    model: str | None = None
    adapters: dict[str, str] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    adapter_dirs: list[str] = field(default_factory=list)
    max_batch_size: int = 16
    batch_window_ms: float = 15.0
    max_queue: int = 64
    precision: str = "fp32"
    max_tokens: int = 1024
    max_prompt_tokens: int = 4096
    max_body_bytes: int = 1 << 20
    graceful_seconds: int = 60


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _run_kinds(runs: list[str]) -> tuple[list[tuple[str, Path, dict]], list[tuple[str, Path]]]:
    """Adapter runs (name, folder, tunelab.json) and full fine-tuning runs (name, run folder)."""
    from tunelab.inference.adapters import read_adapter_meta
    from tunelab.runs import RunDir

    adapters, full = [], []
    for r in runs:
        run = RunDir.open(r)
        name = run.path.resolve().name
        if run.adapter_dir.is_dir():
            adapters.append((name, run.adapter_dir, read_adapter_meta(run.adapter_dir)))
        elif run.model_dir.is_dir():
            full.append((name, run.path))
        else:
            raise ModelError(f"{run.path} holds no trained artefact (adapter/ or model/); did training finish?")
    return adapters, full


def _common_base(adapter_runs: list[tuple[str, Path, dict]]) -> str | None:
    if not adapter_runs:
        return None
    bases: dict[str, list[tuple[str, Any]]] = {}
    for name, _, meta in adapter_runs:
        key = str(meta.get("base_fingerprint") or meta.get("base_model"))
        bases.setdefault(key, []).append((name, meta.get("base_model")))
    if len(bases) > 1:
        groups = "; ".join(f"{', '.join(n for n, _ in members)} on {members[0][1]!r}" for members in bases.values())
        raise ConfigError(f"the runs were trained on different base models ({groups}); serve one base per server")
    return adapter_runs[0][2].get("base_model")


def _examples(runs: list[str], per_run: int = 3) -> list[dict[str, str]]:
    """A few test inputs of each run's task, for the playground's picker (skipped when its data is absent)."""
    from tunelab.config.loader import load_config
    from tunelab.recipes.components import load_eval_examples

    out = []
    for r in runs:
        try:
            cfg = load_config(Path(r) / "config.yaml")
            for ex in load_eval_examples(cfg, max_samples=per_run):
                out.append({"title": f"{Path(r).name}: {ex.id}", "text": ex.input})
        except Exception:  # the playground works without examples
            continue
    return out


def build(options: ServeOptions):
    """The pool, engine and ASGI app for `options` (used by the CLI and by tests in-process)."""
    from tunelab.serving.api import ServerSettings, create_app
    from tunelab.serving.engine import Engine
    from tunelab.serving.pool import ModelPool

    api_key = options.api_key or os.environ.get(API_KEY_ENV)
    if not is_loopback(options.host) and not api_key:
        raise ConfigError(f"binding {options.host} (not loopback) needs an API key: --api-key or ${API_KEY_ENV}")
    adapter_runs, full_runs = _run_kinds(options.runs)
    base = options.model or _common_base(adapter_runs)
    if base is None and not full_runs:
        raise ConfigError("nothing to serve: give --model, run directories, or both")
    pool = ModelPool()
    if base is not None:
        pool.set_base(base)
    for name, folder, _ in adapter_runs:
        pool.add_adapter(name, folder)
    for name, adapter_path in options.adapters.items():
        pool.add_adapter(name, adapter_path)
    for name, path in full_runs:
        pool.add_full_run(name, path)
    engine = Engine(pool, options.max_batch_size, options.batch_window_ms, options.max_queue, options.precision)
    settings = ServerSettings(
        api_key=api_key,
        max_body_bytes=options.max_body_bytes,
        max_prompt_tokens=options.max_prompt_tokens,
        max_tokens=options.max_tokens,
        adapter_dirs=[Path(d) for d in options.adapter_dirs],
        examples=_examples(options.runs),
    )
    return pool, engine, create_app(pool, engine, settings)


def serve(options: ServeOptions) -> None:
    import uvicorn

    from tunelab.serving.vllm import vllm_lora_problems

    pool, engine, app = build(options)
    for m in pool.models.values():
        if m.parent is not None:
            for problem in vllm_lora_problems(m.root):
                logger.warning(f"note: adapter {m.id} on vLLM: {problem}")
    engine.start()
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        log_level="warning",
        timeout_graceful_shutdown=options.graceful_seconds,
        lifespan="off",
    )
    logger.warning(
        f"serving {', '.join(pool.models)} at http://{options.host}:{options.port}  (playground: /, API: /v1)"
    )  # a warning: shown even with --quiet, it says where to connect
    # uvicorn drains on SIGTERM/SIGINT, then re-raises the signal to the handler found at start: a no-op one
    # makes a drained shutdown exit 0 instead of dying of the signal.
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        uvicorn.Server(config).run()
    finally:
        engine.stop()
