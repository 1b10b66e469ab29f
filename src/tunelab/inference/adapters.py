"""Several task adapters on one base model: load, switch, generate with mixed adapters, merge.

Adapters stay separate PEFT-format folders (`adapter_config.json` + `adapter_model.safetensors`, plus
`tunelab.json` naming the base model and task), so plain PEFT loads each of them too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from tunelab.errors import ModelError
from tunelab.modeling import Model, base_model

BASE = "__base__"  # adapter name that means "no adapter" in a mixed batch (PEFT's convention)
ADAPTER_META = "tunelab.json"  # beside PEFT's files: base model, method, task (plain PEFT ignores it)


def is_quantized(model: torch.nn.Module) -> bool:
    base = base_model(model)
    return bool(
        getattr(base, "is_loaded_in_4bit", False)
        or getattr(base, "is_loaded_in_8bit", False)
        or getattr(getattr(base, "config", None), "quantization_config", None)
    )


def read_adapter_meta(adapter_dir: Path) -> dict[str, Any]:
    meta = adapter_dir / ADAPTER_META
    return json.loads(meta.read_text()) if meta.is_file() else {}


def base_fingerprint(model: torch.nn.Module) -> dict[str, Any]:
    """What identifies a base model whatever path or name it is loaded by: its architecture's shape and a
    hash of its input embedding (never quantized or trained by an adapter), taken in bf16 so that the same
    weights loaded in fp32 or bf16 give the same hash."""
    import hashlib

    base = base_model(model)
    weight = base.get_input_embeddings().weight
    rows = weight.detach()[: min(512, weight.shape[0])].to("cpu", torch.bfloat16).contiguous()
    cfg = base.config
    layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "num_layers", None)
    return {
        "model_type": cfg.model_type,
        "vocab_size": int(weight.shape[0]),
        "hidden_size": int(weight.shape[1]),
        "layers": layers,
        "embedding_sha256": hashlib.sha256(rows.view(torch.int16).numpy().tobytes()).hexdigest(),
    }


def _canonical(name: str | None) -> str | None:
    """An alias and its cache folder, or two paths of one folder, give the same string."""
    from tunelab.models.registry import ALIASES, alias_dir

    if not name:
        return None
    if name in ALIASES:
        return str(alias_dir(name).resolve())
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def check_base(model: torch.nn.Module, adapter_dir: Path, base_name: str) -> None:
    """Refuse an adapter trained on another base model. The recorded fingerprint decides when there is one
    (any path or alias of the same model passes); older adapters are matched by resolved name or path."""
    meta = read_adapter_meta(adapter_dir)
    trained_on = meta.get("base_model")
    recorded = meta.get("base_fingerprint")
    if recorded is not None:
        if recorded == base_fingerprint(model):
            return
        differs = [k for k in recorded if recorded[k] != base_fingerprint(model).get(k)]
        raise ModelError(
            f"adapter {adapter_dir} was trained on base model {trained_on!r}, not {base_name!r} "
            f"(they differ in {', '.join(differs)})"
        )
    known = {_canonical(trained_on), _canonical(meta.get("base_model_path"))} - {None}
    if known and _canonical(base_name) not in known:
        raise ModelError(f"adapter {adapter_dir} was trained on base model {trained_on!r}, not {base_name!r}")


def attach_adapter(model: Model, adapter_dir: Path, base_name: str, adapter_name: str = "default"):
    """Load a PEFT adapter onto `model`; a wrong base model gives an error naming both."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ModelError(f"{adapter_dir} is not a PEFT adapter folder (no adapter_config.json)")
    check_base(model, adapter_dir, base_name)
    trained_on = read_adapter_meta(adapter_dir).get("base_model")
    try:
        if hasattr(model, "load_adapter") and hasattr(model, "peft_config"):
            model.load_adapter(str(adapter_dir), adapter_name=adapter_name)
            return model
        return PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=adapter_name)
    except (RuntimeError, ValueError, KeyError) as e:
        raise ModelError(
            f"adapter {adapter_dir} (trained on {trained_on or 'an unrecorded base'}) does not fit "
            f"base model {base_name!r}: {str(e).splitlines()[0]}"
        ) from None


def load_adapters(model: Model, adapters: Mapping[str, str | Path], base_name: str):
    """Attach several named adapters to `model` (a plain base model); the first becomes active."""
    if not adapters:
        raise ModelError("no adapters given")
    for name, path in adapters.items():
        model = attach_adapter(model, Path(path), base_name, adapter_name=name)
    model.set_adapter(next(iter(adapters)))
    return model


def generate_mixed(model, tokenizer, prompts, arch, adapter_names: Sequence[str], **gen_kwargs) -> list[str]:
    """Generate one batch whose rows use different adapters (PEFT `adapter_names`; `__base__` = none)."""
    from tunelab.data.collate import generation_batch

    if len(adapter_names) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(adapter_names)} adapter names")
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in generation_batch(prompts, tokenizer.pad_token_id, arch).items()}
    model.eval()
    with torch.no_grad():
        out = model.generate(
            **batch,
            adapter_names=list(adapter_names),
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **gen_kwargs,
        )
    new = out if arch == "seq2seq" else out[:, batch["input_ids"].shape[1] :]
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]


def merge_adapter(model: Model) -> Model:
    """Fold a LoRA/IA3 adapter into the base weights and return the plain model.

    A 4-bit base cannot take merged weights without losing them to re-quantization: merge into a
    full-precision copy of the base instead (`tunelab merge` does this).
    """
    if is_quantized(model):
        raise ModelError(
            "refusing to merge into a quantized (4/8-bit) base: the merged weights would be "
            "re-quantized; load the base in full precision and merge there"
        )
    if not hasattr(model, "merge_and_unload"):
        raise ModelError("this model has no mergeable adapter (prompt/prefix tuning adapters cannot be merged)")
    try:
        return model.merge_and_unload()
    except (AttributeError, ValueError) as e:
        raise ModelError(f"cannot merge this adapter: {e}") from None
