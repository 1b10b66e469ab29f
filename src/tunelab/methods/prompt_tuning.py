"""Prompt tuning / soft prompts (Lester et al., 2021) through PEFT: N trainable virtual-token embeddings.

`init: text` starts the virtual tokens from the embedding of a text (the task instruction by default),
`sample_vocab` from random vocabulary embeddings, `random` from noise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from tunelab.methods.base import Method, MethodConfigBase, ModelContext, peft_task_type

if TYPE_CHECKING:  # torch and peft load when a method runs, not when a config is read
    import torch


class PromptTuningMethodConfig(MethodConfigBase):
    name: Literal["prompt_tuning"] = "prompt_tuning"
    num_virtual_tokens: int = Field(20, gt=0)
    init: Literal["text", "sample_vocab", "random"] = "text"
    init_text: str | None = None  # default: the task instruction
    seq2seq_prompt: Literal["encoder", "encoder_decoder"] = "encoder_decoder"
    """Seq2seq models: `encoder` prepends virtual tokens to the encoder input only (Lester et al.'s setup);
    `encoder_decoder` (PEFT's default) to the encoder and the decoder."""


def prepare(model: torch.nn.Module, cfg: PromptTuningMethodConfig, ctx: ModelContext) -> torch.nn.Module:
    from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

    init = {
        "text": PromptTuningInit.TEXT,
        "sample_vocab": PromptTuningInit.SAMPLE_VOCAB,
        "random": PromptTuningInit.RANDOM,
    }[cfg.init]
    kwargs: dict[str, Any] = {}
    if cfg.init == "text":
        kwargs = {
            "prompt_tuning_init_text": cfg.init_text or ctx.instruction or "Summarize the dialogue.",
            "tokenizer_name_or_path": ctx.model_path,
        }
    if ctx.arch == "seq2seq":
        kwargs["num_transformer_submodules"] = 1 if cfg.seq2seq_prompt == "encoder" else 2
    peft_cfg = PromptTuningConfig(
        task_type=peft_task_type(ctx.arch), num_virtual_tokens=cfg.num_virtual_tokens, prompt_tuning_init=init, **kwargs
    )
    return get_peft_model(model, peft_cfg)


def generate_with_soft_prompt(model, batch: dict[str, torch.Tensor], gen: dict) -> torch.Tensor:
    """Causal soft-prompt generation: the learned virtual tokens are prepended as embeddings and the base
    model generates from `inputs_embeds`. (PEFT's own generate for prompt tuning loses the prompt once the
    KV cache is used with transformers 5: outputs differ from cache-free decoding; tested.)"""
    import torch

    base = model.get_base_model()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    words = base.get_input_embeddings()(ids)
    prompt = model.get_prompt(batch_size=ids.shape[0]).to(words.dtype)
    embeds = torch.cat([prompt, words], dim=1)
    full_mask = torch.cat([torch.ones(ids.shape[0], prompt.shape[1], dtype=mask.dtype, device=mask.device), mask], 1)
    return base.generate(inputs_embeds=embeds, attention_mask=full_mask, **gen)  # only new tokens come back


METHOD = Method(
    name="prompt_tuning",
    config_cls=PromptTuningMethodConfig,
    prepare=prepare,
    is_peft=True,
    peft_type="PROMPT_TUNING",
    causal_generate=generate_with_soft_prompt,
)


def learned_prompt(model) -> torch.Tensor | None:
    """A prompt-tuned model's virtual token embeddings (a copy), or None for any other model."""
    cfg = getattr(model, "active_peft_config", None)
    if cfg is None or cfg.peft_type.value != "PROMPT_TUNING":
        return None
    return model.get_prompt_embedding_to_save(adapter_name=model.active_adapter).detach().clone()


def nearest_tokens(
    prompt_embeddings: torch.Tensor, vocab_embeddings: torch.Tensor, tokenizer, k: int = 5
) -> list[list[tuple[str, float]]]:
    """For each learned virtual token, the k vocabulary tokens with the most similar input embedding (cosine)."""
    import torch

    p = torch.nn.functional.normalize(prompt_embeddings.float(), dim=-1)
    v = torch.nn.functional.normalize(vocab_embeddings.float(), dim=-1)
    sims, ids = (p @ v.T).topk(k, dim=-1)
    # decoded text, not the tokenizer's internal symbols (byte-level BPE shows a space as 'Ġ', a newline as 'Ċ')
    return [
        [(tokenizer.decode([int(i)]), float(s)) for i, s in zip(row_ids, row_sims)]
        for row_ids, row_sims in zip(ids, sims)
    ]
