"""QLoRA (Dettmers et al., 2023): LoRA on a base whose linear layers are stored in 4-bit NF4.

The base is quantized at load time by bitsandbytes (CUDA or CPU backend). Matmuls run in
`compute_dtype` (bfloat16 by default, as in the paper; float32 on request); LoRA weights stay float32. While it
trains under bf16 autocast, the base's other weights (embeddings, norms) are stored in bf16 too, as the recipe
loads the model (`training.frozen_weights`, training/frozen.py), and read back in fp32 when training ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from tunelab.methods.base import Method, ModelContext
from tunelab.methods.lora import LoraSettings, peft_lora_config

if TYPE_CHECKING:  # torch and peft load when a method runs, not when a config is read
    import torch


class QLoraConfig(LoraSettings):
    name: Literal["qlora"] = "qlora"
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"


def load_kwargs(cfg: QLoraConfig) -> dict[str, Any]:
    import torch
    from transformers import BitsAndBytesConfig

    return {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=cfg.quant_type,
            bnb_4bit_use_double_quant=cfg.double_quant,
            bnb_4bit_compute_dtype=getattr(torch, cfg.compute_dtype),
        )
    }


def prepare(model: torch.nn.Module, cfg: QLoraConfig, ctx: ModelContext) -> torch.nn.Module:
    from peft import get_peft_model, prepare_model_for_kbit_training

    # activation checkpointing is training.gradient_checkpointing, applied by the loop for every method
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, peft_lora_config(cfg, ctx))


METHOD = Method(name="qlora", config_cls=QLoraConfig, prepare=prepare, is_peft=True, load_kwargs=load_kwargs)
