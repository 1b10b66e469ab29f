"""The export recipe: a finished causal run as GGUF for llama.cpp and Ollama (`tunelab export`).

The run's adapter is merged into a float32 copy of its base (a QLoRA run's base is loaded unquantized), or
with `adapter_only` written as a llama.cpp LoRA file beside the base; a full fine-tuning run is exported
as it is. The folder gets the GGUF file(s), an Ollama Modelfile whose TEMPLATE is the run's evaluation
prompt, a README with the commands, and `export.json` (files, sizes, sha256, settings).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from tunelab.config.loader import load_config
from tunelab.config.schema import ExperimentConfig
from tunelab.errors import DataError, ExportError, RunDirError
from tunelab.io import atomic_write_json, atomic_write_text, staged_dir
from tunelab.runs import RunDir

if TYPE_CHECKING:
    from tunelab.export.gguf import Dtype

# PEFT methods whose learned parameters are input vectors, not weight updates
PROMPT_LEARNING = {"PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING", "MULTITASK_PROMPT_TUNING"}
CONTEXT_CAP = 8192  # Ollama allocates the whole window; a 128k window would not fit a laptop


@dataclass
class ExportResult:
    out: Path
    files: dict[str, int] = field(default_factory=dict)  # file name -> bytes
    manifest: dict[str, Any] = field(default_factory=dict)


def _adapter_type(run: RunDir) -> str | None:
    config = run.adapter_dir / "adapter_config.json"
    return json.loads(config.read_text())["peft_type"] if config.is_file() else None


def check_exportable(run: RunDir, cfg: ExperimentConfig, adapter_only: bool) -> None:
    """Refuse what cannot become a GGUF before loading any weights."""
    from tunelab.export.gguf import arch_spec
    from tunelab.models.loading import load_model_config, resolve_source

    kind = _adapter_type(run)
    if kind in PROMPT_LEARNING:
        raise ExportError(
            f"{run.path} is a {kind.lower().replace('_', ' ')} run: its learned virtual tokens are "
            "inputs prepended to every prompt, not weight changes, so they cannot be merged into the "
            "model and llama.cpp cannot load them; serve it with `tunelab serve` instead"
        )
    if kind is None and not run.model_dir.is_dir():
        raise RunDirError(f"{run.path} holds no trained artefact (adapter/ or model/); did training finish?")
    if adapter_only and kind is None:
        raise ExportError(
            f"{run.path} is a full fine-tuning run: it has no adapter to export alone; drop --adapter-only"
        )
    if adapter_only and kind != "LORA":
        raise ExportError(
            f"llama.cpp's adapter files hold LoRA adapters only, not {kind}; export the merged model "
            "(drop --adapter-only)"
        )
    name = cfg.model.name if kind is not None else str(run.model_dir)
    arch_spec(load_model_config(resolve_source(name), cfg.model))


def _export_session(run: RunDir, cfg: ExperimentConfig):
    """The run's base (or full model) in float32 on the CPU, unquantized: the weights that are written."""
    from tunelab.recipes.components import open_session

    model = {"dtype": "float32"} | ({} if run.adapter_dir.is_dir() else {"name": str(run.model_dir)})
    cfg = cfg.model_copy(
        update={
            "model": cfg.model.model_copy(update=model),
            "training": cfg.training.model_copy(update={"device": "cpu"}),
        }
    )
    return open_session(cfg, quantize_for_method=False)


def _prompt_template(session) -> tuple[str, bool]:
    """The evaluation prompt around `INPUT_MARKER`, and whether it holds the task instruction (a template
    whose other columns the user must fill gets the chat template only)."""
    from tunelab.data.records import Example
    from tunelab.data.templates import Template
    from tunelab.export.ollama import INPUT_MARKER

    example = Example("export", INPUT_MARKER, ("",))
    try:
        return session.encoder.prompt_text(session.templates.eval, example), True
    except DataError:
        return session.encoder.prompt_text(Template("{input}"), example), False


def _stops(tokenizer) -> list[str]:
    stops = [tokenizer.eos_token]
    template = getattr(tokenizer, "chat_template", None) or ""
    stops += [m for m in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>") if m in template and m not in stops]
    return stops


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _readme(run: RunDir, cfg: ExperimentConfig, manifest: dict[str, Any], prompt: str, has_instruction: bool) -> str:
    name = cfg.name.lower().replace("_", "-")
    files = "\n".join(f"| `{f}` | {info['bytes'] / 2**20:,.1f} MiB |" for f, info in manifest["files"].items())
    model = manifest["model_file"]
    lora = f" --lora {manifest['adapter_file']}" if manifest.get("adapter_file") else ""
    what = (
        "the task instruction and the chat template"
        if has_instruction
        else "the chat template (write the "
        "task's instruction yourself: the task template names columns other than the input)"
    )
    n = manifest["max_new_tokens"]
    return f"""# {cfg.name} for llama.cpp and Ollama

Exported by tunelab from `{run.path}` ({manifest["method"]} on `{cfg.model.name}`), weights in
{manifest["dtype"]}; llama.cpp pre-tokenizer `{manifest["pre_tokenizer"]}`.

| file | size |
|---|---|
{files}

## Ollama

    ollama create {name} -f Modelfile
    ollama run {name} "$(cat dialogue.txt)"

The Modelfile's TEMPLATE wraps what you send in {what}, exactly as tunelab evaluated the model, and decodes
greedily with at most {n} new tokens. tunelab also cut inputs at {manifest["max_input_tokens"]} tokens; Ollama
does not, so very long inputs can score differently.

## llama.cpp

`prompt-template.txt` is the prompt with `{{input}}` where your text goes:

    python3 -c 'import sys; print(open("prompt-template.txt").read().replace("{{input}}", sys.stdin.read().strip()), end="")' < dialogue.txt > prompt.txt
    llama-completion -m {model}{lora} -f prompt.txt -n {n} --temp 0

(`llama-cli -no-cnv` in older llama.cpp builds.)

The prompt, with `{{input}}` standing for your text:

```
{prompt}
```
"""


def _write_files(stage: Path, session, run: RunDir, dtype: Dtype, adapter_only: bool) -> dict[str, str]:
    from tunelab.export.gguf import write_lora_gguf, write_model_gguf
    from tunelab.export.vocab import vocab_from_tokenizer
    from tunelab.inference.adapters import attach_adapter, merge_adapter

    cfg = session.cfg
    with tempfile.TemporaryDirectory(prefix="tunelab-vocab-") as tmp:
        vocab = vocab_from_tokenizer(session.loaded.tokenizer, Path(tmp))
        if not run.adapter_dir.is_dir():
            write_model_gguf(session.model, vocab, stage / "model.gguf", dtype, cfg.name)
            return {"model_file": "model.gguf", "pre_tokenizer": vocab.pre}
        if adapter_only:
            write_model_gguf(session.model, vocab, stage / "base.gguf", dtype, f"{cfg.model.name} (base)")
            peft_model = attach_adapter(session.model, run.adapter_dir, cfg.model.name)
            write_lora_gguf(peft_model, stage / "adapter.gguf", cfg.name)
            return {"model_file": "base.gguf", "adapter_file": "adapter.gguf", "pre_tokenizer": vocab.pre}
        merged = merge_adapter(attach_adapter(session.model, run.adapter_dir, cfg.model.name))
        write_model_gguf(merged, vocab, stage / "model.gguf", dtype, cfg.name)
        return {"model_file": "model.gguf", "pre_tokenizer": vocab.pre}


def export_run(
    run_path: str | Path, out: str | Path, to: str = "gguf", dtype: str = "f16", adapter_only: bool = False
) -> ExportResult:
    """Export a finished causal run for llama.cpp and Ollama into a new folder `out`."""
    from tunelab.export.gguf import DTYPES
    from tunelab.export.ollama import INPUT_MARKER, modelfile, ollama_template

    if to != "gguf":
        raise ExportError(f"export format {to!r} is not supported; formats: gguf")
    if dtype not in DTYPES:
        raise ExportError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    run, out = RunDir.open(run_path), Path(out)
    if out.exists():
        raise RunDirError(f"{out} exists already; choose a new output folder")
    cfg = load_config(run.config_path)
    check_exportable(run, cfg, adapter_only)
    session = _export_session(run, cfg)
    prompt, has_instruction = _prompt_template(session)
    context = min(int(getattr(session.model.config, "max_position_embeddings", 2048)), CONTEXT_CAP)
    stops = _stops(session.loaded.tokenizer)
    with staged_dir(out, "the export") as stage:
        written = _write_files(stage, session, run, cast("Dtype", dtype), adapter_only)
        manifest: dict[str, Any] = {
            "run": str(run.path),
            "method": cfg.method.name,
            "base_model": cfg.model.name,
            "dtype": dtype,
            "adapter_only": adapter_only,
            **written,
            "stops": stops,
            "context": context,
            "max_new_tokens": cfg.evaluation.max_new_tokens,
            "max_input_tokens": cfg.template.max_input_tokens,
            "prompt_has_instruction": has_instruction,
        }
        atomic_write_text(
            stage / "Modelfile",
            modelfile(
                written["model_file"],
                ollama_template(prompt),
                stops,
                cfg.evaluation.max_new_tokens,
                context,
                written.get("adapter_file"),
            ),
        )
        atomic_write_text(stage / "prompt-template.txt", prompt.replace(INPUT_MARKER, "{input}"))
        gguf_files = [f for f in (written["model_file"], written.get("adapter_file")) if f]
        manifest["files"] = {f: {"bytes": (stage / f).stat().st_size, "sha256": _sha256(stage / f)} for f in gguf_files}
        atomic_write_text(
            stage / "README.md", _readme(run, cfg, manifest, prompt.replace(INPUT_MARKER, "{input}"), has_instruction)
        )
        atomic_write_json(stage / "export.json", manifest)
    return ExportResult(out, {f: info["bytes"] for f, info in manifest["files"].items()}, manifest)
