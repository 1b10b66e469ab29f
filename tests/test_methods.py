"""Every PEFT method on tiny T5 and Llama models: it trains, only its own parameters change, and the
saved adapter reloads to identical outputs. Plus per-task adapters, merging, QLoRA and cost accounting."""

import random
from pathlib import Path

import pytest
import torch

from conftest import make_tokenizer, synthetic_dialogue
from tunelab.config import build_config
from tunelab.data import Example, PromptEncoder, TemplateSet, TrainCollator
from tunelab.data.encoding import encode_training_set
from tunelab.errors import ModelError
from tunelab.evaluation.costs import full_checkpoint_bytes, parameter_counts, weight_file_bytes
from tunelab.methods import ModelContext, get_method
from tunelab.inference.adapters import generate_mixed, load_adapters, merge_adapter
from tunelab.models import load_model
from tunelab.training import evaluation_loss, train_model

CPU = torch.device("cpu")
METHODS = {
    "prompt_tuning": ({"name": "prompt_tuning", "num_virtual_tokens": 8, "init": "text"}, 0.1),
    "prompt_tuning_encoder": (
        {"name": "prompt_tuning", "num_virtual_tokens": 8, "init": "sample_vocab", "seq2seq_prompt": "encoder"},
        0.1,
    ),
    "ia3": ({"name": "ia3"}, 0.05),
    "prefix_tuning": ({"name": "prefix_tuning", "num_virtual_tokens": 8}, 0.02),
    "dora": ({"name": "lora", "r": 4, "dropout": 0.0, "use_dora": True, "target_modules": "all-linear"}, 1e-2),
    "rslora": ({"name": "lora", "r": 4, "dropout": 0.0, "use_rslora": True}, 1e-2),
}


def dialogues(n, seed):
    rng = random.Random(seed)
    return [Example(str(i), *[(d, (s,)) for d, s in [synthetic_dialogue(rng)]][0]) for i in range(n)]


def prepare(model_dir, method_cfg, lr=1e-2, steps=30, seed=0):
    cfg = build_config(
        {
            "model": {"name": str(model_dir)},
            "method": method_cfg,
            "training": {"max_steps": steps, "batch_size": 8, "lr": lr, "warmup_ratio": 0.0},
        }
    )
    method = get_method(cfg.method.name)
    loaded = load_model(cfg.model, device=CPU, extra_kwargs=method.load_kwargs(cfg.method))
    ts = TemplateSet("dialogue_summarization")
    enc = PromptEncoder(loaded.tokenizer, loaded.arch, False, 64, 16)
    train = encode_training_set(enc, dialogues(48, seed), ts.for_training(48, seed))
    held = encode_training_set(enc, dialogues(16, 99), [ts.eval] * 16)
    torch.manual_seed(seed)
    model = method.prepare(loaded.model, cfg.method, ModelContext(loaded.arch, str(model_dir), ts.eval.instruction))
    return cfg, loaded, model, train, held, enc, ts


def held_loss(model, loaded, held):
    from torch.utils.data import DataLoader

    return evaluation_loss(
        model,
        DataLoader(held, batch_size=8, collate_fn=TrainCollator(loaded.tokenizer.pad_token_id, loaded.arch)),
        loaded.arch,
    )


def frozen_state(model):
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {n: p.detach().clone() for n, p in model.named_parameters() if n not in names}


@pytest.mark.parametrize("arch", ["llama", "t5"])
@pytest.mark.parametrize("key", list(METHODS))
def test_method_trains_only_its_parameters_and_reloads_exactly(key, arch, tiny_llama_dir, tiny_t5_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    if key == "prompt_tuning_encoder" and arch == "llama":
        pytest.skip("encoder-only soft prompts exist for seq2seq models only")
    model_dir = tiny_llama_dir if arch == "llama" else tiny_t5_dir
    method_cfg, lr = METHODS[key]
    cfg, loaded, model, train, held, _, _ = prepare(model_dir, method_cfg, lr)
    frozen = frozen_state(model)
    before = held_loss(model, loaded, held)
    train_model(
        model, loaded.tokenizer, loaded.arch, train, None, cfg.training, seed=0, device=CPU, show_progress=False
    )
    after = held_loss(model, loaded, held)
    assert after < 0.95 * before, (before, after)
    for name, p in model.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), f"frozen parameter {name} changed"

    model.save_pretrained(tmp_path / "adapter")
    auto = AutoModelForCausalLM if arch == "llama" else AutoModelForSeq2SeqLM
    reloaded = PeftModel.from_pretrained(auto.from_pretrained(model_dir), tmp_path / "adapter").eval()
    model.eval()
    collate = TrainCollator(loaded.tokenizer.pad_token_id, loaded.arch)
    batch = collate(held[:4])
    batch.pop("position_ids", None)
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, reloaded(**batch).logits, atol=1e-6)


def test_soft_prompt_initialised_from_text_starts_at_the_text_embeddings(tiny_llama_dir):
    _, loaded, model, *_ = prepare(
        tiny_llama_dir,
        {"name": "prompt_tuning", "num_virtual_tokens": 4, "init": "text", "init_text": "anna wants a car"},
    )
    ids = loaded.tokenizer("anna wants a car", add_special_tokens=False)["input_ids"]
    vocab = model.get_base_model().get_input_embeddings().weight
    prompt = model.get_prompt_embedding_to_save(adapter_name="default")
    assert torch.allclose(prompt, vocab[ids])
    from tunelab.methods.prompt_tuning import nearest_tokens

    nearest = nearest_tokens(prompt, vocab, loaded.tokenizer, k=1)
    assert [row[0][0] for row in nearest] == ["anna", "wants", "a", "car"]


def test_prompt_tuning_encoder_only_puts_virtual_tokens_on_the_encoder(tiny_t5_dir):
    _, _, both, *_ = prepare(tiny_t5_dir, {"name": "prompt_tuning", "num_virtual_tokens": 4, "init": "random"})
    _, _, enc, *_ = prepare(
        tiny_t5_dir, {"name": "prompt_tuning", "num_virtual_tokens": 4, "init": "random", "seq2seq_prompt": "encoder"}
    )
    assert both.get_prompt_embedding_to_save("default").shape[0] == 8
    assert enc.get_prompt_embedding_to_save("default").shape[0] == 4


# ---- per-task adapters --------------------------------------------------------------------------


def _train_lora(model_dir, seed, out):
    cfg, loaded, model, train, *_ = prepare(model_dir, {"name": "lora", "r": 4, "dropout": 0.0}, steps=10, seed=seed)
    train_model(
        model, loaded.tokenizer, loaded.arch, train, None, cfg.training, seed=seed, device=CPU, show_progress=False
    )
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def two_adapters(tiny_llama_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {"task_a": _train_lora(tiny_llama_dir, 1, root / "a"), "task_b": _train_lora(tiny_llama_dir, 2, root / "b")}


def test_mixed_adapter_batch_equals_per_adapter_generation(tiny_llama_dir, two_adapters):
    cfg = build_config({"model": {"name": str(tiny_llama_dir)}})
    loaded = load_model(cfg.model, device=CPU)
    model = load_adapters(loaded.model, two_adapters, str(tiny_llama_dir))
    enc = PromptEncoder(loaded.tokenizer, "causal", False, 64, 16)
    ts = TemplateSet("dialogue_summarization")
    prompts = [enc.encode_for_generation(ts.eval, ex) for ex in dialogues(3, 5)]
    names = ["task_a", "task_b", "__base__"]
    mixed = generate_mixed(model, loaded.tokenizer, prompts, "causal", names, max_new_tokens=6)
    single = []
    for prompt, name in zip(prompts, names):
        if name == "__base__":
            with model.disable_adapter():
                single += generate_mixed(model, loaded.tokenizer, [prompt], "causal", ["__base__"], max_new_tokens=6)
        else:
            model.set_adapter(name)
            single += generate_mixed(model, loaded.tokenizer, [prompt], "causal", [name], max_new_tokens=6)
    assert mixed == single
    model.set_adapter("task_a")
    batch = TrainCollator(loaded.tokenizer.pad_token_id, "causal")(prompts[:1])
    with torch.no_grad():
        a = model(input_ids=batch["input_ids"]).logits
        model.set_adapter("task_b")
        b = model(input_ids=batch["input_ids"]).logits
        with model.disable_adapter():
            base = model(input_ids=batch["input_ids"]).logits
    assert not torch.allclose(a, b) and not torch.allclose(a, base)


def test_merged_model_equals_unmerged_adapter(tiny_llama_dir, two_adapters):
    cfg = build_config({"model": {"name": str(tiny_llama_dir)}})
    loaded = load_model(cfg.model, device=CPU)
    model = load_adapters(loaded.model, {"a": two_adapters["task_a"]}, str(tiny_llama_dir)).eval()
    x = torch.randint(5, 60, (2, 12))
    with torch.no_grad():
        unmerged = model(input_ids=x).logits
        merged_model = merge_adapter(model)
        merged = merged_model(input_ids=x).logits
    assert not hasattr(merged_model, "peft_config")
    assert torch.allclose(unmerged, merged, atol=1e-5)


def test_merge_run_cli_writes_a_standalone_model(tiny_llama_dir, dialogue_files, tmp_path):
    import tunelab
    from conftest import experiment
    from transformers import AutoModelForCausalLM

    tree = experiment(
        tiny_llama_dir,
        dialogue_files,
        tmp_path,
        training={"max_steps": 3},
        evaluation={"before": False, "max_samples": 2},
    )
    run = tunelab.finetune(tunelab.build_config(tree), show_progress=False, echo=None).run_dir
    out = tunelab.merge_run(run, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(out)
    session = tunelab.open_for_generation(run=run)
    x = torch.randint(5, 60, (1, 9))
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=x).logits, session.model(input_ids=x).logits, atol=1e-5)
    with pytest.raises(tunelab.RunDirError, match="exists already"):
        tunelab.merge_run(run, out)


# ---- QLoRA ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wide_llama_dir(tmp_path_factory):
    """bitsandbytes' CPU 4-bit kernels need in_features >= its block size (64)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            pad_token_id=0,
            eos_token_id=1,
            initializer_range=0.1,
            tie_word_embeddings=False,
        )
    )
    path = tmp_path_factory.mktemp("wide-llama")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the process's memory mappings (Linux)")
def test_a_quantized_load_hands_back_the_checkpoint_pages_before_copying_its_weights_out(wide_llama_dir, monkeypatch):
    """The embeddings and norms of a 4-bit load still view the memory-mapped fp32 checkpoint; before they are
    copied out of it, the mapping's pages are handed back (madvise), so the copies do not come on top of every page
    quantization read. The weights are exactly the checkpoint's afterwards."""
    import tunelab.models.loading as loading
    from safetensors.torch import load_file

    paged: list[str] = []
    real_page_out = loading.page_out

    def recording(ranges):
        fields = [line.split(maxsplit=5) for line in Path("/proc/self/maps").read_text().splitlines()]
        files = {tuple(int(x, 16) for x in f[0].split("-")): f[5] for f in fields if len(f) == 6}
        paged.extend(files.get(r, "?") for r in ranges)
        real_page_out(ranges)

    monkeypatch.setattr(loading, "page_out", recording)
    cfg = build_config({"model": {"name": str(wide_llama_dir)}, "method": {"name": "qlora", "r": 8}})
    loaded = load_model(cfg.model, device=CPU, extra_kwargs=get_method("qlora").load_kwargs(cfg.method))
    checkpoint = wide_llama_dir / "model.safetensors"
    assert str(checkpoint) in paged
    assert str(checkpoint) not in Path("/proc/self/maps").read_text()  # every view copied out: the mapping closed
    on_disk = load_file(checkpoint)
    assert torch.equal(loaded.model.get_input_embeddings().weight, on_disk["model.embed_tokens.weight"])
    assert torch.equal(loaded.model.model.norm.weight, on_disk["model.norm.weight"])


def test_qlora_base_is_4bit_and_trains_on_cpu(wide_llama_dir):
    import bitsandbytes as bnb

    cfg, loaded, model, train, held, *_ = prepare(
        wide_llama_dir, {"name": "qlora", "r": 8, "dropout": 0.0, "compute_dtype": "float32"}, lr=1e-2
    )
    base = model.get_base_model()
    q = base.model.layers[0].self_attn.q_proj.base_layer
    assert isinstance(q, bnb.nn.Linear4bit)
    assert q.weight.quant_state.quant_type == "nf4"
    assert q.weight.numel() * q.weight.element_size() == 128 * 128 // 2  # 4 bits per weight
    maps = Path("/proc/self/maps")
    if maps.exists():  # no view of the fp32 checkpoint is kept, so its pages do not stay resident beside the model
        assert str(wide_llama_dir / "model.safetensors") not in maps.read_text()
    counts = parameter_counts(model)
    assert counts["total_parameters"] > sum(p.numel() for p in base.parameters())  # PEFT counts 4-bit unpacked
    before = held_loss(model, loaded, held)
    train_model(
        model, loaded.tokenizer, loaded.arch, train, None, cfg.training, seed=0, device=CPU, show_progress=False
    )
    assert held_loss(model, loaded, held) < 0.95 * before
    with pytest.raises(ModelError, match="quantized"):
        merge_adapter(model)


def test_qlora_stores_its_whole_frozen_base_in_bf16_while_training_and_gives_it_back_exactly(wide_llama_dir):
    """Under bf16 autocast QLoRA's other weights (embeddings, norms, a separate head; its linear weights are 4-bit
    already) are stored in bf16 too, as its recipe loads the model: the losses differ from fp32 storage by
    rounding only, and when training ends every floating weight of the base is read back exactly as loaded."""
    method = {"name": "qlora", "r": 8, "dropout": 0.0}
    runs, embedding_dtype = {}, {}
    for setting in ("fp32", "auto"):
        cfg, loaded, model, train, *_ = prepare(wide_llama_dir, method, steps=3)
        training = cfg.training.model_copy(update={"precision": "bf16", "frozen_weights": setting, "log_every": 1})

        def note_dtype(module, args, output, setting=setting):
            embedding_dtype[setting] = module.weight.dtype  # the last forward: a training step

        hook = model.get_base_model().model.embed_tokens.register_forward_hook(note_dtype)
        result = train_model(model, loaded.tokenizer, loaded.arch, train, None, training, seed=0, device=CPU,
                             show_progress=False, base_checkpoint=wide_llama_dir)  # fmt: skip
        hook.remove()
        runs[setting] = (result, {k: v.clone() for k, v in model.get_base_model().state_dict().items()})
    assert embedding_dtype == {"fp32": torch.float32, "auto": torch.bfloat16}
    assert runs["fp32"][0].frozen_weights == "fp32" and runs["auto"][0].frozen_weights == "bf16, whole base"
    fp32_losses, bf16_losses = ([loss for _, loss in runs[s][0].train_loss] for s in ("fp32", "auto"))
    assert bf16_losses == pytest.approx(fp32_losses, rel=2e-2)
    cfg = build_config({"model": {"name": str(wide_llama_dir)}, "method": method})
    fresh = load_model(cfg.model, device=CPU, extra_kwargs=get_method("qlora").load_kwargs(cfg.method)).model
    after = runs["auto"][1]
    floating = [name for name, tensor in fresh.state_dict().items() if tensor.is_floating_point()]
    assert {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"} <= set(floating)
    for name in floating:
        key = next(k for k in (name, name.replace(".weight", ".base_layer.weight")) if k in after)
        assert after[key].dtype == torch.float32 and torch.equal(after[key], fresh.state_dict()[name]), name


# ---- cost accounting ------------------------------------------------------------------------------


def test_lora_trainable_count_matches_a_hand_count(tiny_llama_dir, tmp_path):
    _, loaded, model, *_ = prepare(tiny_llama_dir, {"name": "lora", "r": 4})
    all_params = sum(p.numel() for p in model.parameters())
    # PEFT's default Llama targets are q_proj (32 -> 32) and v_proj (32 -> 2 kv heads x 8 = 16), 2 layers.
    hand = 2 * (4 * (32 + 32) + 4 * (32 + 16))
    counts = parameter_counts(model)
    assert counts["trainable_parameters"] == hand
    assert counts["total_parameters"] == all_params
    assert counts["trainable_percent"] == pytest.approx(100 * hand / all_params)
    model.save_pretrained(tmp_path / "a")
    adapter_bytes = weight_file_bytes(tmp_path / "a")
    full_bytes = full_checkpoint_bytes(model, counts, is_peft=True)
    assert full_bytes == 4 * (all_params - hand)
    assert hand * 4 <= adapter_bytes < full_bytes / 10


def _greedy_without_cache(model, tok, prompt_ids, arch, steps):
    """Reference decoding: recompute the whole sequence each step (no KV cache, no batching)."""
    ids = torch.tensor([prompt_ids])
    out = []
    with torch.no_grad():
        for _ in range(steps):
            if arch == "causal":
                logits = model(input_ids=torch.tensor([prompt_ids + out])).logits
            else:
                dec = (
                    torch.tensor([[model.get_base_model().config.decoder_start_token_id] + out])
                    if hasattr(model, "get_base_model")
                    else None
                )
                logits = model(input_ids=ids, decoder_input_ids=dec).logits
            nxt = int(logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            out.append(nxt)
    return tok.decode(out, skip_special_tokens=True).strip()


@pytest.mark.parametrize("arch", ["llama", "t5"])
@pytest.mark.parametrize("key", ["prompt_tuning", "ia3", "rslora", "prefix_tuning"])
def test_generation_equals_cache_free_greedy_decoding(key, arch, tiny_llama_dir, tiny_t5_dir):
    from tunelab.evaluation.generation import generate_texts

    model_dir = tiny_llama_dir if arch == "llama" else tiny_t5_dir
    method_cfg, lr = METHODS[key]
    cfg, loaded, model, train, held, enc, ts = prepare(model_dir, method_cfg, lr, steps=20)
    train_model(
        model, loaded.tokenizer, loaded.arch, train, None, cfg.training, seed=0, device=CPU, show_progress=False
    )
    model.eval()
    prompts = [enc.encode_for_generation(ts.eval, ex) for ex in dialogues(3, 7)]
    batched = generate_texts(
        model,
        loaded.tokenizer,
        prompts,
        loaded.arch,
        batch_size=3,
        max_new_tokens=6,
        show_progress=False,
        precision="fp32",
    )
    reference = [_greedy_without_cache(model, loaded.tokenizer, p.input_ids, loaded.arch, 6) for p in prompts]
    assert batched == reference


def test_nearest_tokens_are_readable_text_for_byte_level_tokenizers():
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    from tunelab.methods.prompt_tuning import nearest_tokens

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["the cat sat on the mat\nthe end"] * 20, vocab_size=300, min_frequency=1)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer)
    the = tok.convert_tokens_to_ids("Ġthe")
    vocab = torch.eye(len(tok))
    row = nearest_tokens(vocab[[the]], vocab, tok, k=1)[0][0]
    assert row[0] == " the" and row[1] == pytest.approx(1.0)  # not the internal symbol 'Ġthe'
