"""Loading a base model and its tokenizer from an alias, a local folder, a `.gguf` file or a hub id."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from tunelab.config.schema import ModelConfig
from tunelab.errors import ModelError
from tunelab.hub import hub_reachable, in_hub_cache
from tunelab.modeling import Arch, chat_template_in_use
from tunelab.models.registry import ALIASES, pull_model


@dataclass(frozen=True)
class ModelSource:
    path: str  # local folder or hub id
    gguf_file: str | None = None

    @property
    def kwargs(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: Any
    arch: Arch
    source: ModelSource
    use_chat_template: bool


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.endswith(".gguf") or Path(name).exists()


def _unknown_model_message(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(ALIASES), n=3, cutoff=0.4)
    hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    return (
        f"model {name!r} is not a built-in alias{hint}, not a local folder or .gguf file, and not in the "
        f"Hugging Face cache, and the hub cannot be reached from here; built-in models: {', '.join(ALIASES)} "
        "(`tunelab models list`)"
    )


def resolve_source(name: str, pull: bool = True, revision: str | None = None) -> ModelSource:
    if name in ALIASES:
        return ModelSource(str(pull_model(name)) if pull else name)
    if _looks_like_path(name):
        p = Path(name).expanduser()
        if not p.exists():
            raise ModelError(f"model path {p} does not exist")
        if p.is_file():
            if p.suffix != ".gguf":
                raise ModelError(f"model path {p} is a file but not a .gguf; give a model folder or a .gguf file")
            return ModelSource(str(p.parent.resolve()), p.name)
        if not (p / "config.json").is_file():
            raise ModelError(f"model folder {p} has no config.json (is it a Hugging Face model folder?)")
        return ModelSource(str(p.resolve()))
    if not in_hub_cache(name, revision) and not hub_reachable():
        raise ModelError(_unknown_model_message(name))
    return ModelSource(name)  # a hub id


def detect_arch(config) -> Arch:
    return "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelError("training.device is 'cuda' but no CUDA device is available")
    return torch.device(requested)


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    if requested != "auto":
        return getattr(torch, requested)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _keep_bnb_weights_trainable(model: torch.nn.Module) -> None:
    """bitsandbytes repacks 4-bit weights in place for fast CPU inference the first time a layer runs in
    eval mode (on CPUs with AVX512-BF16); the packed layout has no autograd kernel, so a QLoRA model
    evaluated before training (tunelab's "before" scores) would then train with broken gradients.
    Keep the trainable layout."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            cast(Any, module).support_avx512bf16_for_cpu = False


def release_checkpoint_mapping(model: torch.nn.Module) -> None:
    """Copy the weights that still view the memory-mapped checkpoint out of it, so the mapping closes. After a
    quantized load (or frozen weights rounded for training, training/frozen.py) the weights left as loaded
    (embeddings, norms) are such views, and every page quantization has read stays resident while any view
    lives: the whole fp32 file (0.5 GB for SmolLM2-135M) beside a 0.16 GB model (bench/results/methods.md).
    Those pages are handed back first, so the copies do not come on top of them (QLoRA on SmolLM2-135M: its peak
    1.17 -> 1.04 GiB, now in training rather than at the load; bench/results/methods.md)."""
    tensors = [t for t in [*model.parameters(), *model.buffers()] if t.is_floating_point() and t.device.type == "cpu"]
    page_out(file_mappings_holding(tensors))
    for tensor in tensors:
        tensor.data = tensor.data.clone()


MADV_PAGEOUT = 21  # Linux >= 5.4: reclaim these pages now; clean file pages are read again if touched


def file_mappings_holding(tensors: list[torch.Tensor]) -> list[tuple[int, int]]:
    """The file-backed memory mappings of this process (start, end) that hold any of `tensors`' data;
    empty where the process has no /proc/self/maps (not Linux)."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    pointers = [t.data_ptr() for t in tensors]
    found = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or fields[4] == "0":  # no inode: anonymous memory, the heap, the stack
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if any(start <= p < end for p in pointers):
            found.append((start, end))
    return found


def page_out(ranges: list[tuple[int, int]]) -> None:
    """Ask the kernel to reclaim these pages now (madvise MADV_PAGEOUT). Nothing is lost: clean file pages are
    read from the file again when touched, and the kernel leaves pages it cannot reclaim; a kernel or platform
    without it changes nothing."""
    if not ranges:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    for start, end in ranges:
        madvise(start, end - start, MADV_PAGEOUT)


def load_tokenizer(source: ModelSource, cfg: ModelConfig):
    try:
        tok = AutoTokenizer.from_pretrained(
            source.path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code, **source.kwargs
        )
    except (OSError, ValueError) as e:
        raise ModelError(f"could not load a tokenizer from {source.path!r}: {e}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model_config(source: ModelSource, cfg: ModelConfig):
    try:
        return AutoConfig.from_pretrained(
            source.path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code, **source.kwargs
        )
    except (OSError, ValueError) as e:
        raise ModelError(f"could not load a model config from {source.path!r}: {str(e).splitlines()[0]}") from None


def resolve_arch(hf_config, cfg: ModelConfig) -> Arch:
    return detect_arch(hf_config) if cfg.arch == "auto" else cfg.arch


def model_skeleton(hf_config, arch: Arch) -> torch.nn.Module:
    """The model's modules on the meta device: names and shapes, no weights, no memory."""
    auto_cls = AutoModelForSeq2SeqLM if arch == "seq2seq" else AutoModelForCausalLM
    with torch.device("meta"):
        return auto_cls.from_config(hf_config)


def load_model(
    cfg: ModelConfig,
    device: torch.device | None = None,
    extra_kwargs: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> LoadedModel:
    """Load the base model named by `cfg` (tokenizer included), ready for a method to adapt."""
    source = resolve_source(cfg.name, revision=cfg.revision)
    hf_config = load_model_config(source, cfg)
    arch: Arch = resolve_arch(hf_config, cfg)
    device = device or pick_device()
    dtype = dtype or pick_dtype(cfg.dtype, device)
    auto_cls = AutoModelForSeq2SeqLM if arch == "seq2seq" else AutoModelForCausalLM
    kwargs = dict(extra_kwargs or {})
    if cfg.attn_implementation != "auto":
        kwargs["attn_implementation"] = cfg.attn_implementation
    if "quantization_config" in kwargs:
        kwargs["device_map"] = {"": device.index if device.type == "cuda" else device.type}
    try:
        model = auto_cls.from_pretrained(
            source.path,
            revision=cfg.revision,
            trust_remote_code=cfg.trust_remote_code,
            dtype=dtype,
            **source.kwargs,
            **kwargs,
        )
    except (ImportError, ValueError) as e:
        if "attn_implementation" not in kwargs:
            raise
        raise ModelError(
            f"model.attn_implementation {cfg.attn_implementation!r} is not available for {cfg.name!r} here: {e}"
        ) from None
    if "quantization_config" not in kwargs:
        model.to(device)  # type: ignore[arg-type]  # transformers' wrapper of `to` misstates its signature
    else:
        _keep_bnb_weights_trainable(model)
        release_checkpoint_mapping(model)
    tok = load_tokenizer(source, cfg)
    use_chat = chat_template_in_use(tok, arch, cfg)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return LoadedModel(model=model, tokenizer=tok, arch=arch, source=source, use_chat_template=use_chat)
