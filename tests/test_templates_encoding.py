import pytest

from conftest import make_tokenizer
from tunelab.data import IGNORE_INDEX, Example, PromptEncoder, TemplateSet
from tunelab.data.templates import TEMPLATES, Template
from tunelab.errors import ConfigError

EX = Example("1", "#person1#: anna here . i want to buy a red car .", ("anna wants a red car .",))
TEMPLATE = Template("summarize : {input} summary :")


def _completion_ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_causal_loss_mask_covers_exactly_the_completion_and_eos():
    tok = make_tokenizer()
    enc = PromptEncoder(tok, "causal", use_chat_template=False, max_input_tokens=64, max_target_tokens=32)
    e = enc.encode_for_training(TEMPLATE, EX)
    completion = _completion_ids(tok, " " + EX.target) + [tok.eos_token_id]
    n_prompt = len(e.input_ids) - len(completion)
    assert e.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert e.labels[n_prompt:] == completion
    assert e.input_ids[n_prompt:] == completion
    assert e.input_ids[-1] == tok.eos_token_id
    assert tok.decode(e.input_ids[:n_prompt], clean_up_tokenization_spaces=False) == TEMPLATE.render(EX.input)


def test_seq2seq_labels_are_the_completion_and_eos():
    tok = make_tokenizer()
    enc = PromptEncoder(tok, "seq2seq", use_chat_template=False, max_input_tokens=64, max_target_tokens=32)
    e = enc.encode_for_training(TEMPLATE, EX)
    assert e.labels == _completion_ids(tok, EX.target) + [tok.eos_token_id]
    assert e.input_ids[-1] == tok.eos_token_id
    assert IGNORE_INDEX not in e.input_ids


def test_chat_template_wraps_the_prompt_and_masks_it():
    tok = make_tokenizer(chat=True)
    enc = PromptEncoder(tok, "causal", use_chat_template=True, max_input_tokens=64, max_target_tokens=32)
    prompt = enc.prompt_text(TEMPLATE, EX)
    assert prompt == tok.apply_chat_template(
        [{"role": "user", "content": TEMPLATE.render(EX.input)}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.startswith("<|user|>") and prompt.rstrip().endswith("<|assistant|>")
    e = enc.encode_for_training(TEMPLATE, EX)
    completion = _completion_ids(tok, EX.target) + [tok.eos_token_id]
    assert e.labels[-len(completion) :] == completion
    assert set(e.labels[: -len(completion)]) == {IGNORE_INDEX}
    assert e.input_ids[: -len(completion)] == tok(prompt, add_special_tokens=False)["input_ids"]


def test_generation_encoding_is_the_training_prompt():
    tok = make_tokenizer()
    enc = PromptEncoder(tok, "causal", use_chat_template=False, max_input_tokens=64, max_target_tokens=32)
    train = enc.encode_for_training(TEMPLATE, EX)
    gen = enc.encode_for_generation(TEMPLATE, EX)
    n_prompt = sum(1 for x in train.labels if x == IGNORE_INDEX)
    assert gen.input_ids == train.input_ids[:n_prompt]
    assert gen.labels == []


def test_long_inputs_are_cut_in_token_space_and_counted():
    tok = make_tokenizer()
    enc = PromptEncoder(tok, "causal", use_chat_template=False, max_input_tokens=5, max_target_tokens=3)
    e = enc.encode_for_training(TEMPLATE, EX)
    assert enc.stats.inputs_truncated == 1 and enc.stats.targets_truncated == 1 and enc.stats.examples == 1
    prompt_ids = [i for i, l in zip(e.input_ids, e.labels) if l == IGNORE_INDEX]
    assert (
        tok.decode(prompt_ids, clean_up_tokenization_spaces=False) == "summarize : #person1#: anna here . i summary :"
    )
    assert [l for l in e.labels if l != IGNORE_INDEX][-1] == tok.eos_token_id
    assert len([l for l in e.labels if l != IGNORE_INDEX]) == 3
    enc.encode_for_training(TEMPLATE, Example("2", "short one", ("ok",)))
    assert enc.stats.inputs_truncated == 1 and enc.stats.examples == 2


def test_training_samples_every_phrasing_with_a_seed_and_evaluation_uses_one():
    ts = TemplateSet("dialogue_summarization", "all", eval_phrasing=2)
    a = ts.for_training(200, seed=1)
    assert a == ts.for_training(200, seed=1)
    assert a != ts.for_training(200, seed=2)
    assert set(a) == set(TEMPLATES["dialogue_summarization"])
    assert ts.eval == TEMPLATES["dialogue_summarization"][2]


def test_template_choices_are_validated():
    with pytest.raises(ConfigError, match="out of range"):
        TemplateSet("dialogue_summarization", [0, 99])
    with pytest.raises(ConfigError, match="unknown"):
        TemplateSet("no_such_task")
    with pytest.raises(ConfigError, match="placeholder"):
        TemplateSet("dialogue_summarization", custom="no placeholder here")
    assert TemplateSet("x", custom="Sum up: {input}").eval.render("abc") == "Sum up: abc"


def test_every_phrasing_contains_the_input():
    for phrasings in TEMPLATES.values():
        for t in phrasings:
            assert "{input}" in t.prompt
