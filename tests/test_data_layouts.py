"""Bring your own data: Alpaca, ShareGPT and OpenAI/TRL messages records, multi-turn loss masks, templates
with any columns, files as Excel writes them, one file split three ways, prompts kept with predictions."""

import json
from pathlib import Path

import pytest
import yaml

import tunelab
from conftest import experiment, make_tokenizer
from tunelab.config.schema import DataConfig
from tunelab.data.encoding import IGNORE_INDEX, PromptEncoder
from tunelab.data.sources import load_split
from tunelab.data.templates import Template, TemplateSet
from tunelab.errors import DataError

DATA = Path(__file__).parent / "data"


def _files(name: str, **extra) -> DataConfig:
    return DataConfig(source="files", files={"train": str(DATA / name)}, **extra)


def test_each_layout_is_detected_and_read():
    alpaca = load_split(_files("alpaca.jsonl"), "train")
    assert [e.input for e in alpaca][:2] == ["#person1#: hi , anna here . i want to buy a red car .", ""]
    assert (
        alpaca[0].fields["instruction"] == "summarize the following conversation ." and alpaca[2].system == "be brief ."
    )
    assert alpaca[1].target == "anna wants a blue bike ."
    share = load_split(_files("sharegpt.json", id_column="id"), "train")
    assert [m["role"] for m in share[0].messages] == ["system", "user", "assistant", "user", "assistant"]
    assert share[0].id == "c1" and share[0].references == ("anna wants a red car .",)
    msgs = load_split(_files("messages.jsonl"), "train")
    assert [m["weight"] for m in msgs[0].messages if m["role"] == "assistant"] == [1, 0, 1]
    assert msgs[0].input == "summarize what they want ."
    # the layout can be forced, and a wrong one says what is missing
    with pytest.raises(DataError, match=r"alpaca.jsonl:1: 'messages' must be a non-empty list"):
        load_split(_files("alpaca.jsonl", layout="messages"), "train")


def test_bad_chat_records_name_file_line_and_message(tmp_path):
    bad = tmp_path / "bad.jsonl"
    cases = [
        ({"messages": [{"role": "user", "content": "hi"}]}, "must end with an assistant message"),
        (
            {"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]},
            r"messages\[0\]: unknown role 'robot'",
        ),
        (
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x", "weight": 2}]},
            "weight must be 0 or 1",
        ),
    ]
    for record, message in cases:
        bad.write_text(
            json.dumps({"messages": [{"role": "user", "content": "ok"}, {"role": "assistant", "content": "ok"}]})
            + "\n"
            + json.dumps(record)
            + "\n"
        )
        with pytest.raises(DataError, match=rf"bad.jsonl:2: .*{message}"):
            load_split(DataConfig(source="files", files={"train": str(bad)}), "train")
    # extra role names are configurable (data.roles)
    bad.write_text(
        json.dumps({"conversations": [{"from": "customer", "value": "hi"}, {"from": "agent", "value": "x"}]}) + "\n"
    )
    ex = load_split(
        DataConfig(source="files", files={"train": str(bad)}, roles={"customer": "user", "agent": "assistant"}), "train"
    )
    assert [m["role"] for m in ex[0].messages] == ["user", "assistant"]


def _chat_encoder(train_on="all_assistant", arch="causal", chat=True):
    return PromptEncoder(make_tokenizer(chat=chat), arch, chat, 256, 64, train_on)


def _trained_words(enc, encoded) -> list[str]:
    return [
        enc.tok.convert_ids_to_tokens(t) for t, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE_INDEX
    ]


def test_multi_turn_loss_mask_token_by_token():
    """3 user turns with a system prompt: the trained tokens are exactly each weighted assistant turn's
    content and its end-of-turn token, as rendered by the chat template."""
    enc = _chat_encoder()
    ex = load_split(_files("messages.jsonl"), "train")[0]
    encoded = enc.encode_for_training(TemplateSet("dialogue_summarization").eval, ex)
    full = enc.tok.apply_chat_template(
        [{"role": m["role"], "content": m["content"]} for m in ex.messages], tokenize=False
    )
    assert encoded.input_ids == enc.tok(full, add_special_tokens=False)["input_ids"]
    trained = [(m["content"] + " </s>").split() for m in ex.messages if m["role"] == "assistant" and m["weight"]]
    assert _trained_words(enc, encoded) == [w for turn in trained for w in turn]
    # every other token -- system, user turns, role headers, the weight-0 answer -- is masked
    labelled = [label != IGNORE_INDEX for label in encoded.labels]
    assert sum(labelled) == sum(len(t) for t in trained)
    tokens = enc.tok.convert_ids_to_tokens(encoded.input_ids)
    assert all(not lab for tok, lab in zip(tokens, labelled) if tok in ("<|user|>", "<|assistant|>"))
    # only the last answer
    last = _chat_encoder("last_assistant").encode_for_training(TemplateSet("dialogue_summarization").eval, ex)
    assert _trained_words(enc, last) == (ex.messages[-1]["content"] + " </s>").split()


def test_chat_records_on_a_seq2seq_model_are_flattened_input_to_last_answer():
    enc = _chat_encoder(arch="seq2seq", chat=False)
    ex = load_split(_files("sharegpt.json"), "train")[0]
    template = TemplateSet("dialogue_summarization").eval
    prompt = enc.prompt_text(template, ex)
    assert prompt == (
        "system: be brief .\nuser: hi , anna here . i want to buy a red car .\n"
        "assistant: okay , a red car .\nuser: summarize what anna wants .\nassistant:"
    )
    encoded = enc.encode_for_training(template, ex)
    assert encoded.input_ids == enc.tok(prompt, add_special_tokens=False)["input_ids"] + [enc.tok.eos_token_id]
    assert encoded.labels == enc.tok("anna wants a red car .", add_special_tokens=False)["input_ids"] + [
        enc.tok.eos_token_id
    ]


def test_templates_fill_any_column_and_skip_empty_optional_sections():
    t = Template("{instruction}[[\n\nInput: {input}]]\n\nAnswer:")
    assert t.render("", {"instruction": "say hi"}) == "say hi\n\nAnswer:"
    assert t.render("the text", {"instruction": "say hi"}) == "say hi\n\nInput: the text\n\nAnswer:"
    with pytest.raises(
        DataError, match=r"placeholder \{question\} is not a column of the record; columns: input, topic"
    ):
        Template("{question} {input}").render("x", {"topic": "y"})
    # a record's own layout template (alpaca) unless template.custom is set
    enc = PromptEncoder(make_tokenizer(), "causal", False, 64, 16)
    alpaca = load_split(_files("alpaca.jsonl"), "train")
    ts = TemplateSet("dialogue_summarization")
    assert enc.prompt_text(ts.eval, alpaca[1]) == "write a short summary of what anna wants ."
    assert enc.prompt_text(ts.eval, alpaca[0]).startswith("summarize the following conversation .\n\n#person1#:")
    custom = TemplateSet("dialogue_summarization", custom="Task: {instruction}[[ | {input}]]")
    assert enc.prompt_text(custom.eval, alpaca[1]) == "Task: write a short summary of what anna wants ."
    # the column of a columns-layout file works as a placeholder too, and is cut like {input}
    rows = load_split(_files("excel_bom.csv", input_column="text"), "train")
    short = PromptEncoder(make_tokenizer(), "causal", False, 3, 16)
    assert short.prompt_text(TemplateSet("x", custom="[{text}]").eval, rows[0]) == "[#person1#: hi ,]"


def test_excel_csv_with_bom_and_crlf_reads():
    rows = load_split(_files("excel_bom.csv", input_column="text"), "train")
    assert [e.target for e in rows] == ["emma wants a pink book .", "hugo wants a red ticket ."]


def test_one_file_is_split_deterministically_and_recorded(tiny_t5_dir, tmp_path):
    src = tmp_path / "all.jsonl"
    from conftest import synthetic_dialogue
    import random

    rng = random.Random(1)
    src.write_text(
        "".join(
            json.dumps({"id": f"r{i}", "dialogue": d, "summary": s}) + "\n"
            for i, (d, s) in enumerate(synthetic_dialogue(rng) for _ in range(40))
        )
    )
    cfg = DataConfig(
        source="files", files={"train": str(src)}, id_column="id", split={"validation": 0.1, "test": 0.2, "seed": 3}
    )
    parts = {name: [e.id for e in load_split(cfg, name)] for name in ("train", "validation", "test")}
    assert [len(v) for v in parts.values()] == [28, 4, 8]
    assert set().union(*map(set, parts.values())) == {f"r{i}" for i in range(40)}
    assert not set(parts["train"]) & set(parts["test"])
    assert parts == {name: [e.id for e in load_split(cfg, name)] for name in parts}  # deterministic
    tree = experiment(
        tiny_t5_dir,
        {"train": str(src)},
        tmp_path,
        name="split",
        data={"id_column": "id", "split": {"validation": 0.1, "test": 0.2, "seed": 3}},
        training={"max_steps": 2},
        evaluation={"max_samples": 3, "before": False},
    )
    metrics = tunelab.finetune(tunelab.build_config(tree), show_progress=False, echo=None).metrics
    assert metrics["data_split"]["sizes"] == {"train": 28, "validation": 4, "test": 8}
    assert metrics["data_split"]["ids"]["test"] == parts["test"]


def test_training_and_evaluation_on_a_messages_file(tiny_llama_chat_dir, tmp_path):
    """Chat data end to end: trains on assistant turns, evaluates by generating the last assistant turn, and
    predictions.jsonl keeps the exact prompt (the conversation so far, chat template applied)."""
    files = {split: str(DATA / "messages.jsonl") for split in ("train", "validation", "test")}
    tree = experiment(
        tiny_llama_chat_dir,
        files,
        tmp_path,
        name="chat",
        data={"id_column": None},
        training={"max_steps": 3},
        evaluation={"max_samples": 3},
    )
    result = tunelab.finetune(tunelab.build_config(tree), show_progress=False, echo=None)
    rows = [json.loads(x) for x in (result.run_dir / "predictions.jsonl").read_text().splitlines()]
    records = [json.loads(x) for x in (DATA / "messages.jsonl").read_text().splitlines()]
    tok = make_tokenizer(chat=True)
    for row, rec in zip(rows, records):
        msgs = [{"role": m["role"], "content": m["content"]} for m in rec["messages"]]
        assert row["references"] == [msgs[-1]["content"]]
        assert row["prompt"] == tok.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
    assert result.metrics["after"]["rouge"]["rougeL"]["f1"] >= 0


def test_predictions_keep_the_exact_prompt(tiny_t5_dir, dialogue_files, tmp_path):
    tree = experiment(
        tiny_t5_dir,
        dialogue_files,
        tmp_path,
        name="prompts",
        training={"max_steps": 1},
        evaluation={"max_samples": 2, "before": False},
    )
    run = tunelab.finetune(tunelab.build_config(tree), show_progress=False, echo=None).run_dir
    row = json.loads((run / "predictions.jsonl").read_text().splitlines()[0])
    dialogue = json.loads(open(dialogue_files["test"]).readline())["dialogue"]
    assert row["prompt"] == TemplateSet("dialogue_summarization").eval.render(dialogue)


def test_scoring_a_model_needs_no_config_and_reruns_write_new_folders(
    tiny_llama_chat_dir, tiny_llama_dir, dialogue_files, tmp_path, monkeypatch, dialogsum_dir
):
    from tunelab.cli.main import main

    monkeypatch.setenv("TUNELAB_DATA_DIR", str(dialogsum_dir.parent))
    monkeypatch.chdir(tmp_path)
    model = str(tiny_llama_chat_dir)
    for _ in range(2):
        assert main(["eval", "--model", model, "--tasks", "sst2", "--limit", "3"]) == 0
    slug = f"eval-{tiny_llama_chat_dir.name}"
    first, second = tmp_path / "runs" / slug, tmp_path / "runs" / f"{slug}-2"
    a, b = (json.loads((p / "benchmarks.json").read_text()) for p in (first, second))
    assert a["sst2"]["n"] == 3 and a["sst2"]["score"] == b["sst2"]["score"]
    # a data file in any layout as the test split (chat records: the last answer is the reference)
    assert main(["eval", "--model", model, "--data", str(DATA / "messages.jsonl"), "--name", "chat-eval"]) == 0
    preds = [json.loads(x) for x in (tmp_path / "runs" / "chat-eval" / "predictions.jsonl").read_text().splitlines()]
    assert [p["references"] for p in preds][1] == ["ben wants a green lamp ."]
    # base + adapter gives what the run gives
    tree = experiment(
        tiny_llama_dir,
        dialogue_files,
        tmp_path,
        name="lora",
        training={"max_steps": 2},
        evaluation={"max_samples": 3, "before": False},
    )
    run = tunelab.finetune(tunelab.build_config(tree), show_progress=False, echo=None).run_dir
    assert (
        main(
            [
                "eval",
                "--model",
                str(tiny_llama_dir),
                "--adapter",
                str(run / "adapter"),
                "--data",
                dialogue_files["test"],
                "--max-samples",
                "3",
                "--name",
                "with-adapter",
                "--set",
                "evaluation.max_new_tokens=8",
                "--set",
                "template.max_input_tokens=64",
            ]
        )
        == 0
    )
    got = json.loads((tmp_path / "runs" / "with-adapter" / "metrics.json").read_text())["base"]
    assert got["rouge"]["rougeL"]["f1"] == pytest.approx(
        json.loads((run / "metrics.json").read_text())["after"]["rouge"]["rougeL"]["f1"]
    )
    # evaluating a run twice keeps both results
    for _ in range(2):
        assert main(["eval", str(run), "--max-samples", "2"]) == 0
    assert (run / "eval-test" / "metrics.json").is_file() and (run / "eval-test-2" / "metrics.json").is_file()
    # wrong combinations say so
    assert main(["eval"]) == 2 and main(["eval", str(run), "--model", model]) == 2


def test_data_preview_shows_what_the_model_sees(tiny_llama_chat_dir, tmp_path, capsys):
    from tunelab.cli.main import main

    files = {"train": str(DATA / "messages.jsonl")}
    cfg = tmp_path / "chat.yaml"

    def preview(max_input):
        cfg.write_text(
            yaml.safe_dump(
                {
                    "model": {"name": str(tiny_llama_chat_dir)},
                    "data": {"source": "files", "files": files},
                    "template": {"max_input_tokens": max_input, "max_target_tokens": 8},
                }
            )
        )
        assert main(["data", "preview", str(cfg), "-n", "2"]) == 0
        return capsys.readouterr().out

    out = preview(256)
    assert "<|assistant|>⟦okay , a red car . </s>⟧" in out  # the chat template applied, trained tokens marked
    assert "<|assistant|> sure , a pink dress . </s>" in out  # weight 0: shown, not trained
    assert "training set: 3 examples (causal, chat template)" in out and "inputs cut at 256 tokens: 0;" in out
    assert "inputs cut at 24 tokens: 1;" in preview(24)  # only the long conversation exceeds 24 + 8 tokens
