"""Writing a causal model, or a LoRA adapter, as a GGUF file that llama.cpp (and Ollama) loads.

Written with the `gguf` package (llama.cpp's own Python writer): tensor names come from its
`TensorNameMap`, hyperparameters and tokenizer go under llama.cpp's metadata keys. Two layouts differ
from Hugging Face's: llama.cpp's Llama graph applies rotary embeddings to interleaved pairs, so the q/k
projection rows are permuted (as llama.cpp's converter does; transformers' GGUF reader undoes it), and
1-D tensors (norms, biases) stay float32 whatever the file's dtype.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from tunelab.errors import ExportError
from tunelab.export.vocab import GgufVocab
from tunelab.modeling import Model

Dtype = Literal["f32", "f16", "bf16", "q8_0"]
DTYPES: tuple[str, ...] = ("f32", "f16", "bf16", "q8_0")


@dataclass(frozen=True)
class ArchSpec:
    gguf_arch: str  # a gguf.MODEL_ARCH member name
    permute_qk: bool  # Llama's rotary layout: q/k rows interleaved for llama.cpp


# Hugging Face `model_type` -> how llama.cpp knows it. Mistral is written as Llama (as llama.cpp's converter does).
ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": ArchSpec("LLAMA", True),
    "mistral": ArchSpec("LLAMA", True),
    "qwen2": ArchSpec("QWEN2", False),
    "qwen3": ArchSpec("QWEN3", False),
}


def arch_spec(config: Any) -> ArchSpec:
    model_type = getattr(config, "model_type", None)
    if getattr(config, "is_encoder_decoder", False):
        raise ExportError(
            f"{model_type} is an encoder-decoder (seq2seq) model: llama.cpp runs T5 only partly (no "
            "chat, no server batching, no LoRA), so tunelab exports causal models only; serve it with "
            "`tunelab serve` or use the merged Hugging Face folder (`tunelab merge`)"
        )
    if model_type not in ARCHITECTURES:
        raise ExportError(
            f"GGUF export does not know architecture {model_type!r}; supported: {', '.join(ARCHITECTURES)}"
        )
    if (
        getattr(config, "sliding_window", None)
        and getattr(config, "use_sliding_window", True)
        and model_type == "mistral"
    ):
        raise ExportError("Mistral with sliding-window attention is not supported by the exporter")
    return ARCHITECTURES[model_type]


def _rope(config: Any) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    kind = params.get("rope_type") or (getattr(config, "rope_scaling", None) or {}).get("rope_type")
    if kind not in (None, "default"):
        raise ExportError(f"rotary scaling {kind!r} is not supported by the exporter (only plain RoPE)")
    theta = params.get("rope_theta") or getattr(config, "rope_theta", None)
    return float(theta) if theta is not None else 10000.0


def _head_dim(config: Any) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def _kv_heads(config: Any) -> int:
    return int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)


def permute_rotary(rows: torch.Tensor, n_head: int) -> torch.Tensor:
    """Reorder the output rows of a q/k projection (weight, bias or LoRA B) from Hugging Face's rotate-half
    layout to the interleaved pairs llama.cpp's Llama graph uses."""
    return rows.reshape(n_head, 2, rows.shape[0] // n_head // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def _rotary_heads(hf_name: str, config: Any) -> int | None:
    if ".q_proj." in hf_name or hf_name.endswith(".q_proj"):
        return int(config.num_attention_heads)
    if ".k_proj." in hf_name or hf_name.endswith(".k_proj"):
        return _kv_heads(config)
    return None


def _encode(array: np.ndarray, dtype: Dtype):
    """The tensor's bytes in the file's dtype and the ggml type; 1-D tensors stay float32 (llama.cpp's rule),
    and a matrix whose rows are not whole Q8_0 blocks falls back to f16."""
    import gguf

    q = gguf.GGMLQuantizationType
    if array.ndim == 1 or dtype == "f32":
        return array.astype(np.float32), q.F32
    if dtype == "q8_0" and array.shape[-1] % gguf.GGML_QUANT_SIZES[q.Q8_0][0] == 0:
        return gguf.quants.quantize(array, q.Q8_0), q.Q8_0
    if dtype == "bf16":
        return gguf.quants.quantize(array, q.BF16), q.BF16
    return array.astype(np.float16), q.F16


def _file_type(dtype: Dtype) -> int:
    import gguf

    f = gguf.LlamaFileType
    return {"f32": f.ALL_F32, "f16": f.MOSTLY_F16, "bf16": f.MOSTLY_BF16, "q8_0": f.MOSTLY_Q8_0}[dtype]


def _name_map(config: Any, spec: ArchSpec):
    import gguf

    return gguf.get_tensor_name_map(gguf.MODEL_ARCH[spec.gguf_arch], int(config.num_hidden_layers))


def _gguf_name(name_map: Any, hf_name: str, suffixes: tuple[str, ...] = (".weight", ".bias")) -> str:
    name = name_map.get_name(hf_name, try_suffixes=suffixes)
    if name is None:
        raise ExportError(
            f"no llama.cpp tensor name for {hf_name!r}: the model has a module the exporter does not "
            "know (it would be dropped, so the export is refused)"
        )
    return name


def _model_tensors(model: torch.nn.Module, spec: ArchSpec) -> Iterator[tuple[str, torch.Tensor]]:
    config = model.config
    name_map = _name_map(config, spec)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp uses token_embd when there is no output.weight
        data = tensor.detach().to("cpu", torch.float32)
        heads = _rotary_heads(hf_name, config) if spec.permute_qk else None
        if heads is not None:
            data = permute_rotary(data, heads)
        yield _gguf_name(name_map, hf_name), data


def _write_hyperparameters(writer: Any, config: Any, vocab_size: int) -> None:
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(int(config.num_attention_heads))
    writer.add_head_count_kv(_kv_heads(config))
    head_dim = _head_dim(config)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_freq_base(_rope(config))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(vocab_size)


def _open_writer(path: Path, spec: ArchSpec, kind: str, name: str):
    import gguf

    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[spec.gguf_arch]])
    writer.add_type(kind)
    writer.add_name(name)
    return writer


def _finish(writer: Any) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_model_gguf(model: Model, vocab: GgufVocab, path: Path, dtype: Dtype = "f16", name: str = "model") -> Path:
    """Write a (merged, plain) causal model and its tokenizer as one GGUF file."""
    import gguf

    if dtype not in DTYPES:
        raise ExportError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    spec = arch_spec(model.config)
    vocab_size = int(model.get_input_embeddings().weight.shape[0])
    writer = _open_writer(path, spec, gguf.GGUFType.MODEL, name)
    _write_hyperparameters(writer, model.config, vocab_size)
    writer.add_file_type(_file_type(dtype))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    vocab.write(writer, vocab_size)
    for gguf_name, data in _model_tensors(model, spec):
        array, qtype = _encode(data.numpy(), dtype)
        writer.add_tensor(gguf_name, array, raw_dtype=qtype)
    _finish(writer)
    return path


def _lora_config(peft_model: Any) -> Any:
    cfg = peft_model.peft_config[peft_model.active_adapter]
    kind = cfg.peft_type.value
    if kind != "LORA":
        raise ExportError(
            f"llama.cpp's adapter format holds LoRA adapters only, not {kind}; export the merged "
            "model instead (drop --adapter-only)"
        )
    if getattr(cfg, "use_dora", False):
        raise ExportError("DoRA adapters have no llama.cpp adapter form; export the merged model instead")
    if getattr(cfg, "bias", "none") != "none" or getattr(cfg, "modules_to_save", None):
        raise ExportError(
            "this LoRA also trains biases or whole modules (bias/modules_to_save), which a llama.cpp "
            "LoRA file cannot hold; export the merged model instead"
        )
    return cfg


def lora_tensors(peft_model: Any) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """(llama.cpp tensor name, A, B) for every LoRA layer, in llama.cpp's layout. llama.cpp scales each pair by
    alpha / rank with the file's single alpha, so a layer whose PEFT scale differs (rsLoRA, rank or alpha
    patterns) has the difference folded into B."""
    cfg = _lora_config(peft_model)
    adapter = peft_model.active_adapter
    base = peft_model.get_base_model()
    spec = arch_spec(base.config)
    name_map = _name_map(base.config, spec)
    for module_name, module in base.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if lora_a is None or adapter not in lora_a:
            continue
        if module_name.endswith(("embed_tokens", "lm_head")):
            raise ExportError(
                "LoRA on the embeddings or the output head cannot be exported as a llama.cpp adapter; "
                "export the merged model instead"
            )
        a = lora_a[adapter].weight.detach().to("cpu", torch.float32)
        b = module.lora_B[adapter].weight.detach().to("cpu", torch.float32)
        b = b * (module.scaling[adapter] * a.shape[0] / cfg.lora_alpha)
        heads = _rotary_heads(module_name, base.config) if spec.permute_qk else None
        if heads is not None:
            b = permute_rotary(b, heads)
        yield _gguf_name(name_map, module_name, ()) + ".weight", a, b


def write_lora_gguf(peft_model: Any, path: Path, name: str = "adapter") -> Path:
    """Write a PEFT LoRA adapter as a llama.cpp LoRA file (`llama-cli --lora`, Ollama's ADAPTER), float32."""
    import gguf

    cfg = _lora_config(peft_model)
    spec = arch_spec(peft_model.get_base_model().config)
    writer = _open_writer(path, spec, gguf.GGUFType.ADAPTER, name)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(cfg.lora_alpha))
    count = 0
    for tensor_name, a, b in lora_tensors(peft_model):
        writer.add_tensor(f"{tensor_name}.lora_a", a.numpy())
        writer.add_tensor(f"{tensor_name}.lora_b", b.numpy())
        count += 1
    if count == 0:
        raise ExportError("the adapter has no LoRA layers to export")
    _finish(writer)
    return path
