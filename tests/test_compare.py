"""`tunelab compare` over tiny models: every arm runs, finished arms are reused, the report is complete."""

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from html.parser import HTMLParser

import pytest
import yaml

import tunelab
from conftest import experiment
from tunelab.cli.main import main
from tunelab.errors import DataError

ARMS = [
    {"name": "zero-shot", "kind": "prompting", "shots": 0},
    {"name": "two-shot", "kind": "prompting", "shots": 2},
    {"name": "full", "method": {"name": "full"}, "training": {"lr": 5e-3}},
    {"name": "lora", "method": {"name": "lora", "r": 8, "dropout": 0.0, "target_modules": "all-linear"}},
    {
        "name": "prompt-tuning",
        "method": {"name": "prompt_tuning", "num_virtual_tokens": 4, "init": "random"},
        "training": {"lr": 0.1},
    },
    {"name": "ia3", "method": {"name": "ia3"}, "training": {"lr": 0.05}},
]


@pytest.fixture
def compare_config(tiny_llama_chat_dir, dialogue_files, tmp_path):
    base = experiment(
        tiny_llama_chat_dir,
        dialogue_files,
        tmp_path,
        training={"max_steps": 8},
        evaluation={"before": False, "max_samples": 4},
        benchmarks={"tasks": ["sst2"], "limit": 6, "bootstrap_samples": 20},
    )
    path = tmp_path / "compare.yaml"
    path.write_text(
        yaml.safe_dump({"name": "cmp", "output_dir": str(tmp_path / "runs"), "experiment": base, "arms": ARMS})
    )
    return path


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.svgs, self.tables, self.text = set(), [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "svg":
            self.svgs.append(a)
        if tag == "table":
            self.tables.append(a.get("id"))

    def handle_data(self, data):
        self.text.append(data)


def test_compare_runs_every_arm_reuses_finished_ones_and_reports(compare_config, tmp_path, sst2_available):
    result = tunelab.compare(compare_config, show_progress=False, echo=None)
    assert result.reused == []
    directory = tmp_path / "runs" / "cmp"
    for arm in ARMS:
        assert (directory / arm["name"] / "COMPLETE").exists()
        assert json.loads((directory / arm["name"] / "arm.json").read_text())["kind"] in ("prompting", "finetune")
    two_shot = json.loads((directory / "two-shot" / "metrics.json").read_text())
    assert two_shot["after"]["context"]["shots"] == 2
    soft = json.loads((directory / "prompt-tuning" / "metrics.json").read_text())["soft_prompt"]
    assert len(soft["neighbours"]) == 4 and all(len(row) == soft["k"] == 5 for row in soft["neighbours"])
    assert soft["task_word_share"] == sum(soft["task_word"]) / 4 and 0 <= soft["chance_share"] <= 1
    assert len(soft["cosine_to_initial"]) == 4 and all(c < 0.9999 for c in soft["cosine_to_initial"])  # trained
    assert "soft_prompt" not in json.loads((directory / "lora" / "metrics.json").read_text())
    assert (
        two_shot["after"]["context"]["mean_prompt_tokens"]
        > json.loads((directory / "zero-shot" / "metrics.json").read_text())["after"]["context"]["mean_prompt_tokens"]
    )

    page = _Collect()
    page.feed((directory / "report.html").read_text())
    assert {
        "chart-rouge",
        "chart-gain-forgetting",
        "chart-trainable",
        "chart-storage",
        "chart-memory",
        "chart-time",
    } <= {s.get("id") for s in page.svgs}
    assert {"summary", "forgetting", "predictions", "soft-prompts"} <= set(page.tables)
    text = " ".join(page.text)
    for arm in ARMS:
        assert arm["name"] in text
    md = (directory / "report.md").read_text()
    assert all(f"| {arm['name']}" in md for arm in ARMS)
    assert f"| prompt-tuning | {sum(soft['task_word'])}/4 (" in md.split("### Soft prompts")[1]
    # the benchmark column says what it is, and arms that changed no weights show "-" there
    summary = md.split("\n\n")[1]  # the first table
    table = [[c.strip() for c in line.split("|")[1:-1]] for line in summary.splitlines() if line.startswith("| ")]
    column = table[0].index("benchmark change")
    by_arm = {row[0]: row[column] for row in table[1:]}
    assert by_arm["zero-shot"] == by_arm["two-shot"] == "-" and by_arm["lora"].startswith(("+", "-"))
    assert "sst2 (accuracy)" in text

    mtimes = {a["name"]: (directory / a["name"] / "metrics.json").stat().st_mtime_ns for a in ARMS}
    again = tunelab.compare(compare_config, show_progress=False, echo=None)
    assert sorted(again.reused) == sorted(a["name"] for a in ARMS)
    assert mtimes == {a["name"]: (directory / a["name"] / "metrics.json").stat().st_mtime_ns for a in ARMS}

    # a setting of how the computation runs, not what it computes, keeps every arm
    tree = yaml.safe_load(compare_config.read_text())
    tree["experiment"].setdefault("training", {}).update(compile=True, save_every=3)
    compare_config.write_text(yaml.safe_dump(tree))
    assert sorted(tunelab.compare(compare_config, show_progress=False, echo=None).reused) == sorted(again.reused)

    # a changed arm reruns, the others stay
    tree["arms"][3]["method"]["r"] = 4
    compare_config.write_text(yaml.safe_dump(tree))
    third = tunelab.compare(compare_config, show_progress=False, echo=None)
    assert "lora" not in third.reused and len(third.reused) == len(ARMS) - 1
    assert yaml.safe_load((directory / "lora" / "config.yaml").read_text())["method"]["r"] == 4
    assert not list(directory.glob(".*.tmp")) and not list(directory.glob(".*.partial"))

    # the report can be rebuilt from the run directories alone, with the config's arm order and colours
    written = {n: (directory / n).read_text() for n in ("report.html", "report.md")}
    (directory / "report.html").unlink()
    assert main(["report", str(directory)]) == 0
    assert {n: (directory / n).read_text() for n in written} == written
    rows = [line.split("|")[1].strip() for line in written["report.md"].splitlines() if line.startswith("| ")][1:]
    assert rows[: len(ARMS)] == [a["name"] for a in ARMS]


@pytest.fixture
def sst2_available():
    from tunelab.paths import data_root

    if data_root() is None or not (data_root() / "sst2").is_dir():
        pytest.skip("benchmark data not found: set TUNELAB_DATA_DIR")


def _chromium() -> str | None:
    """The browser `make setup` installs (Debian's chromium) when the machine allows it; tests never install."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _in_one_process(path: Path) -> Path:
    tree = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**tree, "isolate_arms": False}))
    return path


def test_each_arm_runs_in_a_fresh_process_of_its_own(compare_config, tmp_path, monkeypatch):
    """Nothing of this process reaches an arm: a change made here (standing in for a model, cache or allocator
    state an earlier arm left behind) is not seen by the arm's process. In one process the arm sees it."""
    arms_module = importlib.import_module("tunelab.recipes.arms")

    def poisoned(*args, **kwargs):
        raise AssertionError("the arm ran in the comparison's own process")

    monkeypatch.setattr(arms_module, "prompting_arm", poisoned)
    tree = yaml.safe_load(compare_config.read_text())
    tree["arms"] = [ARMS[0]]
    compare_config.write_text(yaml.safe_dump(tree))
    messages: list[str] = []
    result = tunelab.compare(compare_config, show_progress=False, echo=messages.append)
    assert (result.arms["zero-shot"] / "COMPLETE").exists() and any("zero-shot: running" in m for m in messages)
    with pytest.raises(AssertionError, match="comparison's own process"):
        tunelab.compare(_in_one_process(compare_config), ("evaluation.max_samples=3",), False, None)


def test_the_comparisons_own_process_loads_no_torch(compare_config):
    """Only the arms' processes hold a model: the comparison's process, alive for the whole run, orchestrates
    without importing torch or transformers (in the demo that kept ~0.44 GiB resident beside every arm)."""
    import sys

    tree = yaml.safe_load(compare_config.read_text())
    tree["arms"] = [ARMS[0], ARMS[3]]
    tree["experiment"]["benchmarks"]["tasks"] = []
    compare_config.write_text(yaml.safe_dump(tree))
    heavy = ("torch", "transformers", "peft", "accelerate")
    probe = (
        "import sys, tunelab\nresult = tunelab.compare(sys.argv[1], show_progress=False, echo=None)\n"
        f"print(sorted(result.arms), sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(compare_config)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == f"{sorted([ARMS[0]['name'], ARMS[3]['name']])} []"


def test_an_arms_error_is_raised_here_and_leaves_no_half_arm(compare_config, tmp_path):
    """An error inside an arm's process comes back as the same error, with its message (file and line named),
    and the arm's directory is not created; the arms before it stay finished."""
    tree = yaml.safe_load(compare_config.read_text())
    bad = tmp_path / "bad_train.jsonl"
    bad.write_text('{"fname": "a", "dialogue": "x", "summary": "y"}\n{not json\n')
    broken = {
        **ARMS[3],
        "name": "broken",
        "data": {"files": {**tree["experiment"]["data"]["files"], "train": str(bad)}},
    }
    tree["arms"] = [ARMS[0], broken]
    compare_config.write_text(yaml.safe_dump(tree))
    with pytest.raises(DataError, match=r"bad_train\.jsonl:2: malformed JSON"):
        tunelab.compare(compare_config, show_progress=False, echo=None)
    directory = tmp_path / "runs" / "cmp"
    assert (directory / "zero-shot" / "COMPLETE").exists()
    assert not (directory / "broken").exists() and not list(directory.glob(".broken.*"))


def test_an_arm_recorded_before_a_setting_counted_as_execution_is_still_reused(compare_config, tmp_path):
    from tunelab.config.compare import load_compare_config
    from tunelab.recipes.comparing import ARM_FILE, _is_reusable

    arm = load_compare_config(compare_config).arms[3]
    recorded = json.loads(json.dumps(arm.signature()))
    recorded["experiment"]["training"].update(save_every=0, compile=False)  # as an older tunelab wrote it
    arm_dir = tmp_path / "arm"
    arm_dir.mkdir()
    (arm_dir / "COMPLETE").touch()
    (arm_dir / ARM_FILE).write_text(json.dumps(recorded))
    assert _is_reusable(arm_dir, arm)
    recorded["experiment"]["training"]["lr"] = 0.5  # what it computes: not reused
    (arm_dir / ARM_FILE).write_text(json.dumps(recorded))
    assert not _is_reusable(arm_dir, arm)


def _compare_process(config: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TUNELAB_FAULT"}
    env["TQDM_DISABLE"] = "1"
    if fault:
        env["TUNELAB_FAULT"] = fault
    command = [sys.executable, "-m", "tunelab.cli.main", "compare", "-q", str(config)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def test_an_interrupted_arm_continues_from_its_checkpoint_to_the_same_result(compare_config, tmp_path):
    """A study's arm takes an hour: a kill must cost the steps since its last checkpoint, not the arm."""
    tree = yaml.safe_load(compare_config.read_text())
    tree["experiment"]["training"].update(save_every=2)
    tree["experiment"]["evaluation"]["before"] = True  # a phase before training, kept by a resumed arm
    tree["experiment"]["benchmarks"] = {"tasks": []}  # (no benchmark data needed)
    tree["arms"] = [ARMS[3]]
    compare_config.write_text(yaml.safe_dump(tree))
    reference = tmp_path / "reference.yaml"
    reference.write_text(yaml.safe_dump({**tree, "name": "uninterrupted"}))
    assert _compare_process(reference).returncode == 0

    killed = _compare_process(compare_config, fault="after-checkpoint:4")
    assert killed.returncode != 0
    directory = tmp_path / "runs" / "cmp"
    partial = directory / ".lora.partial"
    assert (partial / "checkpoints" / "step-4" / "state.json").is_file() and not (directory / "lora").exists()

    resumed = _compare_process(compare_config)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (directory / "lora" / "COMPLETE").exists() and not partial.exists()
    a = json.loads((tmp_path / "runs" / "uninterrupted" / "lora" / "metrics.json").read_text())
    b = json.loads((directory / "lora" / "metrics.json").read_text())
    assert b["training"]["resumed_from"] == "step-4" and "resumed_from" not in a["training"]
    assert [s for s, _ in a["training"]["train_loss"]] == [s for s, _ in b["training"]["train_loss"]]
    for (_, x), (_, y) in zip(a["training"]["train_loss"], b["training"]["train_loss"]):
        assert x == pytest.approx(y, rel=1e-5, abs=1e-6)
    assert a["after"]["rouge"]["rougeL"]["f1"] == pytest.approx(b["after"]["rouge"]["rougeL"]["f1"])

    # killed before its first checkpoint, an arm trains from the start but keeps what it measured before training
    tree["arms"][0]["method"]["r"] = 4
    compare_config.write_text(yaml.safe_dump(tree))
    assert _compare_process(compare_config, fault="checkpoint-write:2").returncode != 0
    assert not list((partial / "checkpoints").glob("step-*"))
    measured = json.loads((partial / "metrics.json").read_text())
    measured["before"]["kept"] = True
    (partial / "metrics.json").write_text(json.dumps(measured))
    assert _compare_process(compare_config).returncode == 0
    metrics = json.loads((directory / "lora" / "metrics.json").read_text())
    assert metrics["before"]["kept"] is True and "resumed_from" not in metrics["training"]

    # a partial arm of another config is not continued: it starts again
    tree["arms"][0]["method"]["r"] = 2
    compare_config.write_text(yaml.safe_dump(tree))
    assert _compare_process(compare_config, fault="after-checkpoint:4").returncode != 0
    tree["arms"][0]["method"]["r"] = 6
    compare_config.write_text(yaml.safe_dump(tree))
    again = _compare_process(compare_config)
    assert again.returncode == 0, again.stderr[-3000:]
    metrics = json.loads((directory / "lora" / "metrics.json").read_text())
    assert "resumed_from" not in metrics["training"] and "kept" not in metrics["before"]


def test_report_renders_in_a_real_browser(compare_config, tmp_path, sst2_available):
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (`make setup` installs Debian's 'chromium' where apt-get works)")
    tunelab.compare(_in_one_process(compare_config), show_progress=False, echo=None)
    report = tmp_path / "runs" / "cmp" / "report.html"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chrome'}",
        "--window-size=1280,3000",
    ]
    dom = subprocess.run(
        [browser, *flags, "--virtual-time-budget=3000", "--dump-dom", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    page = _Collect()
    page.feed(dom)
    import re

    charts = json.loads(re.search(r'data-charts="([^"]*)"', dom).group(1).replace("&quot;", '"'))
    errors = json.loads(re.search(r'data-errors="([^"]*)"', dom).group(1).replace("&quot;", '"'))
    assert errors == []
    assert set(charts) >= {"chart-rouge", "chart-gain-forgetting", "chart-trainable", "chart-storage"}
    assert all(w > 100 and h > 50 for w, h in charts.values()), charts
    shot = tmp_path / "report.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    img = Image.open(shot).convert("RGB")
    colors = img.resize((64, 150)).getcolors(64 * 150)
    assert colors is not None and len(colors) > 8  # charts drew coloured bars, not a blank page


def test_scatter_ticks_include_zero_and_labels_stay_inside():
    import re

    from tunelab.reporting.svg import nice_ticks, scatter

    assert 0.0 in nice_ticks(-8.7, 2.1) and nice_ticks(0.5, 9.5) == [2.0, 4.0, 6.0, 8.0]
    chart = scatter(
        "c",
        [("zero-shot", 0.0, 0.0), ("a-long-arm-name", -8.33, 13.95), ("full", -5.56, 11.84)],
        "benchmark change",
        "gain",
        width=760,
    )
    x_ticks = re.findall(r'class="x-tick"[^>]*>([^<]+)<', chart)
    assert "+0" in x_ticks and len(x_ticks) >= 4
    for x, anchor, name in re.findall(
        r'class="point-label" x="([\d.]+)" y="[\d.]+" text-anchor="(\w+)"[^>]*>([^<]+)<', chart
    ):
        end = float(x) + (7 * len(name) if anchor == "start" else 0)
        start = float(x) - (7 * len(name) if anchor == "end" else 0)
        assert start >= 60 and end <= 760 - 30, (name, start, end)


def _two_reference_files(folder, dialogue_files):
    """The dialogue files with a second reference per example (summary2), as DialogSum's test split has three."""
    files = {}
    for split, path in dialogue_files.items():
        rows = [json.loads(line) for line in open(path)]
        out = folder / f"{split}.jsonl"
        out.write_text("".join(json.dumps({**r, "summary2": "they talk. " + r["summary"]}) + "\n" for r in rows))
        files[split] = str(out)
    return files


def test_study_features_sweep_claims_single_reference_and_wall_time(
    tiny_llama_chat_dir, dialogue_files, tmp_path, sst2_available, monkeypatch
):
    """An arm's learning rate chosen on validation before it trains; claims judged with paired CIs recomputed from
    the arms' predictions; both ROUGE protocols; the wall time recorded; a rerun reuses everything."""
    import numpy as np
    from rouge_score import rouge_scorer

    from tunelab.evaluation.metrics import sentence_per_line

    files = _two_reference_files(tmp_path, dialogue_files)
    base = experiment(
        tiny_llama_chat_dir,
        files,
        tmp_path,
        data={"target_columns": ["summary", "summary2"]},
        training={"max_steps": 4},
        evaluation={"before": False, "max_samples": 5, "bootstrap_samples": 50},
        benchmarks={"tasks": ["sst2"], "limit": 6, "bootstrap_samples": 20},
    )
    arms = [
        {"name": "zero-shot", "kind": "prompting"},
        {"name": "lora", "method": {"name": "lora", "r": 8, "dropout": 0.0}, "sweep": {"training.lr": [1e-3, 2e-2]}},
        {"name": "full", "method": {"name": "full"}, "training": {"lr": 5e-3}},
    ]
    claims = [
        {"claim": "LoRA beats zero-shot", "arm": "lora", "versus": "zero-shot", "metric": "rouge1"},
        {"claim": "never 100 below", "arm": "lora", "versus": "full", "metric": "single_reference:rougeL",
         "at_least": -100},
        {"claim": "impossible", "arm": "lora", "versus": "full", "metric": "rouge1", "at_least": 100},
        {"claim": "forgets at most 100", "arm": "lora", "versus": "base", "metric": "benchmark:sst2",
         "at_least": -100},
        {"claim": "LoRA trains < 50% of full's parameters", "arm": "lora", "versus": "full",
         "metric": "cost:trainable_parameters", "at_most": 0.5},
        {"claim": "LoRA's adapter is larger than the checkpoint", "arm": "lora", "versus": "full",
         "metric": "cost:artefact_bytes", "at_least": 1},
        {"claim": "LoRA's peak memory", "arm": "lora", "versus": "full", "metric": "cost:peak_memory", "at_most": 100},
    ]  # fmt: skip
    path = tmp_path / "study.yaml"
    tree = {"name": "study", "output_dir": str(tmp_path / "runs"), "experiment": base, "arms": arms, "claims": claims}
    tree["isolate_arms"] = False  # the arms' own processes are tested above; here, the study's features
    path.write_text(yaml.safe_dump(tree))
    tunelab.compare(path, show_progress=False, echo=None)
    directory = tmp_path / "runs" / "study"

    sweep = json.loads((directory / "lora-sweep" / "sweep.json").read_text())
    assert sweep["split"] == "validation" and len(sweep["trials"]) == 2
    for trial in sweep["trials"]:  # trials never look at the test split
        trial_metrics = json.loads((directory / "lora-sweep" / Path(trial["run"]).name / "metrics.json").read_text())
        assert trial_metrics["evaluation_split"] == "validation"
    best = min(sweep["trials"], key=lambda t: t["eval_loss"])["overrides"]["training.lr"]
    lora = json.loads((directory / "lora" / "metrics.json").read_text())
    assert lora["sweep"]["chosen"] == {"training.lr": best}
    assert yaml.safe_load((directory / "lora" / "config.yaml").read_text())["training"]["lr"] == best

    single = lora["after"]["rouge_single_reference"]
    assert single["rouge1"]["pairs"] == 10 and single["rouge1"]["f1"] <= lora["after"]["rouge"]["rouge1"]["f1"]

    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)

    def rouge1(arm):  # per example, best of the references, from rouge-score directly
        rows = [json.loads(x) for x in (directory / arm / "predictions.jsonl").read_text().splitlines()]
        return {
            r["id"]: 100 * scorer.score_multi([sentence_per_line(x) for x in r["references"]],
                                              sentence_per_line(r["prediction"]))["rouge1"].fmeasure
            for r in rows
        }  # fmt: skip

    mine, theirs = rouge1("lora"), rouge1("zero-shot")
    expected = float(np.mean([mine[i] - theirs[i] for i in mine]))
    from tunelab.reporting.claims import claim_rows, gain_rows, judge_claims
    from tunelab.reporting.html import load_arms

    judged = judge_claims(directory, load_arms(directory))
    assert judged[0]["delta"] == pytest.approx(expected) and judged[0]["n"] == 5
    assert judged[0]["ci95_low"] <= judged[0]["delta"] <= judged[0]["ci95_high"]
    assert [c["verdict"] for c in judged[1:]] == ["reproduced", "not reproduced", "reproduced"] + [
        "reproduced",
        "not reproduced",
        "reproduced",
    ]
    assert judged[3]["n"] == 6
    full = json.loads((directory / "full" / "metrics.json").read_text())
    for claim, quantity in zip(judged[4:6], ("trainable_parameters", "artefact_bytes"), strict=True):
        assert claim["ratio"] == pytest.approx(lora["cost"][quantity] / full["cost"][quantity])
    trainable = claim_rows(judged)[4]
    assert trainable[3] == (
        f"x{judged[4]['ratio']:.3g} ({lora['cost']['trainable_parameters']:,} / {full['cost']['trainable_parameters']:,})"
    )
    assert trainable[4:] == ["<= x0.5", "1", "reproduced"]
    assert "different machines" not in claim_rows(judged)[6][3]
    full["environment"]["cpu"]["model"] = "another CPU"  # memory and time depend on the machine; parameters do not
    (directory / "full" / "metrics.json").write_text(json.dumps(full))
    rows = claim_rows(judge_claims(directory, load_arms(directory)))
    assert rows[6][3].endswith(", measured on different machines") and "machines" not in rows[4][3]
    gains = {row[0]: row for row in gain_rows(load_arms(directory))}  # every arm against zero-shot, paired
    assert set(gains) == {"lora", "full"} and gains["lora"][-1] == "5"
    assert gains["lora"][1] == f"{expected:+.2f} [{judged[0]['ci95_low']:+.2f}, {judged[0]['ci95_high']:+.2f}]"
    record = directory / "lora" / "forgetting.json"
    forgetting = json.loads(record.read_text())
    forgetting["tasks"]["sst2"].update(delta=-1.5, ci95_low=-2.5, ci95_high=-0.5)  # an interval no rerun would draw
    record.write_text(json.dumps(forgetting))
    against_base = judge_claims(directory, load_arms(directory))[3]  # the arm's own change, as its forgetting table
    assert (against_base["delta"], against_base["ci95_low"], against_base["ci95_high"]) == (-1.5, -2.5, -0.5)
    from tunelab.reporting.html import headline_rows

    headline = {row[0]: row for row in headline_rows(load_arms(directory), pending=["ia3"])}
    assert [headline[arm][2] for arm in ("zero-shot", "lora", "full")] == ["-", f"{best:g}", "0.005"]
    assert headline["lora"][3].startswith(f"{lora['after']['rouge']['rouge1']['f1']:.2f} [")
    assert headline["lora"][4].startswith(f"{single['rouge1']['f1']:.2f} [")
    assert headline["ia3"][1:3] == ["pending", "-"]
    report = (directory / "report.md").read_text()
    assert "### Claims" in report and "### Single-reference protocol" in report and "Wall time:" in report
    assert "### Against zero-shot, paired" in report
    timing = json.loads((directory / "timing.json").read_text())
    assert set(timing) == {"zero-shot", "lora", "full"} and all(t["seconds"] > 0 for t in timing.values())

    again = tunelab.compare(path, show_progress=False, echo=None)
    assert again.reused == ["zero-shot", "lora", "full"]
    assert json.loads((directory / "timing.json").read_text()) == timing

    # The sweep widened past its edge: the arm is trained again only if that changes the value it chose.
    from tunelab.recipes import sweeping
    from tunelab.recipes.sweeping import beyond_edge

    real_trial, extra = sweeping._trial, beyond_edge([1e-3, 2e-2], best)
    predictions = (directory / "lora" / "predictions.jsonl").read_text()

    def extra_scoring(scores):  # the added values' validation scores, without training them
        def trial(base, assignment, folder, metric, show_progress, echo):
            if assignment["training.lr"] not in scores:
                return real_trial(base, assignment, folder, metric, show_progress, echo)
            return {"overrides": assignment, "run": str(folder / "added"), metric: scores[assignment["training.lr"]]}

        return trial

    tree["arms"][1]["sweep_widen"] = 1
    path.write_text(yaml.safe_dump(tree))
    monkeypatch.setattr(sweeping, "_trial", extra_scoring({extra: 99.0}))  # worse: the arm's value stands
    kept = tunelab.compare(path, show_progress=False, echo=None)
    assert kept.reused == ["zero-shot", "lora", "full"]
    lora = json.loads((directory / "lora" / "metrics.json").read_text())
    assert lora["sweep"]["chosen"] == {"training.lr": best} and lora["sweep"]["widened"] == [extra]
    assert len(lora["sweep"]["trials"]) == 3 and not lora["sweep"]["best_at_edge"]
    assert (directory / "lora" / "predictions.jsonl").read_text() == predictions
    assert json.loads((directory / "timing.json").read_text()) == timing
    assert f"widened by {extra:g}" in (directory / "report.md").read_text()  # in the chosen settings

    tree["arms"][1]["sweep_widen"] = 2
    path.write_text(yaml.safe_dump(tree))
    further = beyond_edge([1e-3, 2e-2, extra], extra)
    monkeypatch.setattr(sweeping, "_trial", extra_scoring({extra: -1.0, further: 99.0}))  # better: trained again
    moved = tunelab.compare(path, show_progress=False, echo=None)
    assert moved.reused == ["zero-shot", "full"]
    assert yaml.safe_load((directory / "lora" / "config.yaml").read_text())["training"]["lr"] == extra
    assert json.loads((directory / "lora" / "metrics.json").read_text())["sweep"]["chosen"] == {"training.lr": extra}


def test_an_arms_error_crosses_the_process_boundary_with_what_explains_it():
    """tunelab's errors come back as they are (their message says what to fix); other errors carry the arm
    process's traceback; an error that cannot be pickled comes back as a RuntimeError with its message."""
    from tunelab.recipes.comparing import _transferable

    def raised(error: BaseException) -> BaseException:
        try:
            raise error
        except BaseException as e:  # noqa: BLE001
            return e

    bad_input = _transferable(raised(DataError("train.jsonl:2: malformed JSON")))
    assert type(bad_input) is DataError and not getattr(bad_input, "__notes__", None)
    bug = _transferable(raised(ValueError("shapes do not match")))
    assert type(bug) is ValueError and "raised in the arm's process" in bug.__notes__[0]
    assert "in raised\n    raise error" in bug.__notes__[0]  # the traceback names where it came from

    class Unpicklable(Exception):
        def __init__(self, message, handle):
            super().__init__(message)
            self.handle = handle

    odd = _transferable(raised(Unpicklable("held a lock", __import__("threading").Lock())))
    assert type(odd) is RuntimeError and str(odd).startswith("Unpicklable: held a lock")


def test_a_kept_arm_shares_its_base_scores_with_the_next_arms(tmp_path, monkeypatch):
    """An arm kept because its (changed) sweep chose the values it trained with hands on the base model's benchmark
    scores it measured, so the next arm with the same base does not measure them again."""
    from tunelab.config.compare import Arm
    from tunelab.config.loader import build_config
    from tunelab.recipes import arms as arms_module
    from tunelab.recipes.comparing import base_suite_key
    from tunelab.runs import RunDir

    cfg = build_config({"name": "lora", "output_dir": str(tmp_path), "benchmarks": {"tasks": ["sst2"]}})
    arm = Arm(name="lora", kind="finetune", experiment=cfg, sweep={"training.lr": [1e-4, 1e-3]}, sweep_widen=1)
    run = RunDir.create(cfg, tmp_path / "lora")
    scores = {"sst2": {"accuracy": 0.5}}
    (run.path / "benchmarks_before.json").write_text(json.dumps(scores))
    run.write_metrics({"name": "lora"})
    run.mark_complete()
    chosen = {"chosen": {"training.lr": cfg.training.lr}, "trials": [], "metric": "eval_loss"}
    monkeypatch.setattr(arms_module, "swept_experiment", lambda arm, show_progress, echo: (cfg, chosen))
    monkeypatch.setattr(arms_module, "finetune", lambda *a, **k: pytest.fail("a kept arm must not train"))
    shared: dict = {}
    assert arms_module.run_arm(arm, tmp_path, show_progress=False, echo=None, base_benchmarks=shared) is True
    assert shared == {base_suite_key(arm): scores}
    assert json.loads((run.path / "metrics.json").read_text())["sweep"] == chosen
    assert json.loads((run.path / "arm.json").read_text()) == json.loads(json.dumps(arm.signature()))
