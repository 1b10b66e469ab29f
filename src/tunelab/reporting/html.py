"""The comparison report: `report.html` (self-contained, opens offline) and `report.md`.

Built only from what the arms' run directories hold (metrics.json, predictions.jsonl, config.yaml,
forgetting.json), so `tunelab report DIR` rebuilds it at any time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from html import escape
from pathlib import Path
from typing import Any, NamedTuple

from tunelab.errors import RunDirError
from tunelab.io import atomic_write_text
from tunelab.reporting import svg
from tunelab.reporting.claims import CLAIM_HEADERS, GAIN_HEADERS, GAIN_NOTE, claim_rows, gain_rows, judge_claims
from tunelab.reporting.tables import human_bytes, markdown_table

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


@dataclass
class ArmSummary:
    name: str
    path: Path
    metrics: dict[str, Any]
    config_text: str
    predictions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def after(self) -> dict[str, Any]:
        return self.metrics["after"]

    def rouge(self, key: str) -> float:
        return self.after["rouge"][key]["f1"]

    def rouge_ci(self, key: str) -> tuple[float, float]:
        lo, hi = self.after["rouge"][key].get("f1_ci95", [self.rouge(key)] * 2)
        return lo, hi

    @property
    def method(self) -> str:
        return self.metrics.get("method", "?")

    @property
    def is_prompting(self) -> bool:
        return self.method.endswith("-shot")

    @property
    def forgetting(self) -> float | None:
        """Mean benchmark change (after - before; negative = forgetting); None when no weights changed."""
        return None if self.is_prompting else self.metrics.get("forgetting_mean_delta")

    @property
    def training(self) -> dict[str, Any]:
        return self.metrics.get("training") or {}

    @cached_property
    def rouge_per_example(self) -> list[dict[str, dict[str, float]]]:
        """Each prediction's ROUGE against the best of its references, scored once for every table and claim."""
        from tunelab.evaluation.metrics import rouge_per_example

        return rouge_per_example(*self._predictions_and_references())

    @cached_property
    def rouge_per_reference(self) -> list[list[dict[str, dict[str, float]]]]:
        """Each prediction's ROUGE against each of its references alone (the single-reference protocol)."""
        from tunelab.evaluation.metrics import rouge_per_reference

        return rouge_per_reference(*self._predictions_and_references())

    def _predictions_and_references(self) -> tuple[list[str], list[list[str]]]:
        return [p["prediction"] for p in self.predictions], [list(p["references"]) for p in self.predictions]

    @property
    def peak_memory(self) -> int:
        mem = self.training.get("memory") or {}
        return int(mem.get("peak_cuda_allocated_bytes", mem.get("peak_rss_bytes", 0)))


ARM_ORDER_FILE = "arms.json"  # the comparison config's arm order, so a rebuilt report keeps order and colours


def load_arms(directory: Path, names: Sequence[str] | None = None) -> list[ArmSummary]:
    directory = Path(directory)
    if names is None:
        finished = {p.name for p in directory.iterdir() if (p / "metrics.json").is_file() and (p / "COMPLETE").exists()}
        order_file = directory / ARM_ORDER_FILE
        recorded = json.loads(order_file.read_text()) if order_file.is_file() else []
        names = [n for n in recorded if n in finished] + sorted(finished - set(recorded))
    arms = []
    for name in names:
        path = directory / name
        if not (path / "metrics.json").is_file():
            raise RunDirError(f"{path} has no metrics.json: not a finished arm")
        preds_file = path / "predictions.jsonl"
        preds = [json.loads(line) for line in preds_file.read_text().splitlines()] if preds_file.is_file() else []
        arms.append(
            ArmSummary(
                name,
                path,
                json.loads((path / "metrics.json").read_text()),
                (path / "config.yaml").read_text() if (path / "config.yaml").is_file() else "",
                preds,
            )
        )
    if not arms:
        raise RunDirError(f"{directory} holds no finished arms")
    return arms


def baseline_arm(arms: Sequence[ArmSummary]) -> ArmSummary | None:
    """The zero-shot arm: the reference for every arm's gain (without one, each arm's own 'before')."""
    return next((a for a in arms if a.method == "0-shot"), None)


def baseline_scores(arms: Sequence[ArmSummary]) -> dict[str, float] | None:
    zero = baseline_arm(arms)
    return {k: zero.rouge(k) for k in ROUGE_KEYS} if zero else None


def gain(arm: ArmSummary, base: dict[str, float] | None, key: str = "rougeL") -> float | None:
    if base is not None:
        return arm.rouge(key) - base[key]
    before = arm.metrics.get("before")
    return arm.rouge(key) - before["rouge"][key]["f1"] if before and "rouge" in before else None


def _fmt_opt(v: float | None, spec: str = "+.2f") -> str:
    return "-" if v is None else format(v, spec)


def summary_rows(arms: Sequence[ArmSummary]) -> list[list[Any]]:
    base = baseline_scores(arms)
    rows = []
    for a in arms:
        cost = a.metrics.get("cost", {})
        rows.append(
            [
                a.name,
                a.method,
                f"{a.rouge('rouge1'):.2f}",
                f"{a.rouge('rouge2'):.2f}",
                f"{a.rouge('rougeL'):.2f}",
                f"{a.after.get('bleu', {}).get('score', 0):.2f}",
                _fmt_opt(gain(a, base)),
                _fmt_opt(a.forgetting),
                f"{cost.get('trainable_percent', 0):.3f}%",
                human_bytes(cost.get("artefact_bytes", 0)),
                human_bytes(a.peak_memory) if a.peak_memory else "-",
                f"{a.training.get('seconds', 0):.0f} s" if a.training else "-",
                f"{a.training.get('completion_tokens_per_second', 0):.1f}" if a.training else "-",
            ]
        )
    return rows


SUMMARY_HEADERS = [
    "arm",
    "method",
    "ROUGE-1",
    "ROUGE-2",
    "ROUGE-L",
    "BLEU",
    "ROUGE-L gain",
    "benchmark change",
    "trainable",
    "artefact",
    "peak memory",
    "train time",
    "tok/s",
]


HEADLINE_HEADERS = [
    "arm",
    "method",
    "learning rate",
    "ROUGE-1, best of refs",
    "ROUGE-1, one ref",
    "ROUGE-L",
    "BLEU",
    "MMLU change",
    "benchmark change",
    "trainable",
    "artefact",
    "peak memory",
    "train time",
]


def learning_rate(arm: ArmSummary) -> float | None:
    """The arm's learning rate: its sweep's choice, else its config's; None for a prompting arm."""
    if arm.is_prompting:
        return None
    chosen = (arm.metrics.get("sweep") or {}).get("chosen") or {}
    if "training.lr" in chosen:
        return float(chosen["training.lr"])
    import yaml

    lr = ((yaml.safe_load(arm.config_text) or {}).get("training") or {}).get("lr")
    return None if lr is None else float(lr)


def _with_ci(value: float, ci: Sequence[float], spec: str = ".2f") -> str:
    return f"{value:{spec}} [{ci[0]:{spec}}, {ci[1]:{spec}}]"


def headline_rows(arms: Sequence[ArmSummary], pending: Sequence[str] = ()) -> list[list[str]]:
    """A study's one table: per finished arm its learning rate, ROUGE-1 under both protocols with 95% CIs, MMLU's
    change with its paired CI, the mean benchmark change and the costs; then a row per arm still `pending`."""
    rows = []
    for a in arms:
        single = (a.after.get("rouge_single_reference") or {}).get("rouge1")
        mmlu = (a.metrics.get("forgetting") or {}).get("mmlu")
        cost = a.metrics.get("cost", {})
        lr = learning_rate(a)
        rows.append(
            [
                a.name,
                a.method,
                "-" if lr is None else f"{lr:g}",
                _with_ci(a.rouge("rouge1"), a.rouge_ci("rouge1")),
                _with_ci(single["f1"], single["f1_ci95"]) if single else "-",
                f"{a.rouge('rougeL'):.2f}",
                f"{a.after.get('bleu', {}).get('score', 0):.2f}",
                _with_ci(mmlu["delta"], (mmlu["ci95_low"], mmlu["ci95_high"]), "+.1f")
                if mmlu and not a.is_prompting
                else "-",
                _fmt_opt(a.forgetting),
                f"{cost.get('trainable_percent', 0):.3f}%",
                human_bytes(cost.get("artefact_bytes", 0)),
                human_bytes(a.peak_memory) if a.peak_memory else "-",
                f"{a.training.get('seconds', 0) / 60:.0f} min" if a.training else "-",
            ]
        )
    rows += [[name, "pending", *["-"] * (len(HEADLINE_HEADERS) - 2)] for name in pending]
    return rows


LATER_KINDS = {"eval-": "task evaluation", "benchmarks-": "benchmarks", "forgetting-": "forgetting"}


def _later_summary(kind: str, folder: Path) -> str | None:
    def read(name: str) -> Any:
        path = folder / name
        return json.loads(path.read_text()) if path.is_file() else None

    if kind == "eval-" and (m := read("metrics.json")):
        return f"ROUGE-L {m['rouge']['rougeL']['f1']:.2f} on {m.get('examples')} {m.get('split')} examples"
    if kind == "benchmarks-" and (r := read("benchmarks.json")):
        return ", ".join(f"{t} {v['main_metric']} {v['score']:.1f} (n={v['n']})" for t, v in r.items())
    if kind == "forgetting-" and (f := read("forgetting.json")):
        return f"mean benchmark change {f['mean_delta']:+.2f} over {', '.join(f['tasks'])}"
    return None


def later_evaluations(arms: Sequence[ArmSummary]) -> list[list[str]]:
    """Rows (arm, folder, kind, result) for the evaluations run on each arm after it finished (`tunelab eval RUN`,
    `tunelab forgetting RUN`), oldest first; what training recorded is in the tables above."""
    rows = []
    for a in arms:
        folders = sorted((p for p in a.path.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        for folder in folders:
            kind = next((k for k in LATER_KINDS if folder.name.startswith(k)), None)
            summary = _later_summary(kind, folder) if kind else None
            if kind and summary:
                rows.append([a.name, folder.name, LATER_KINDS[kind], summary])
    return rows


def wall_time_note(directory: Path, arms: Sequence[ArmSummary]) -> str:
    """The comparison's recorded wall time (recipes/comparing.py timing.json), summed over the arms shown."""
    path = directory / "timing.json"
    timing = json.loads(path.read_text()) if path.is_file() else {}
    seconds = [timing[a.name]["seconds"] for a in arms if a.name in timing]
    if not seconds:
        return ""
    return f"Wall time: {sum(seconds) / 3600:.2f} h over {len(seconds)} arm(s) as they ran (timing.json)."


SINGLE_REFERENCE_HEADERS = ["arm", "ROUGE-1", "ROUGE-2", "ROUGE-L", "ROUGE-Lsum", "pairs"]


def single_reference_rows(arms: Sequence[ArmSummary]) -> list[list[str]]:
    rows = []
    for a in arms:
        single = a.after.get("rouge_single_reference")
        if not single:
            continue
        cells = [_with_ci(single[k]["f1"], single[k]["f1_ci95"]) for k in ROUGE_KEYS]
        rows.append([a.name, *cells, str(single["rouge1"].get("pairs", "-"))])
    return rows


LATER_HEADERS = ["arm", "folder", "kind", "result"]

SWEEP_HEADERS = ["arm", "chosen", "validation score of each value tried", "note"]
SWEEP_NOTE = (
    "Each arm's values were chosen by a sweep of short runs scored on the validation split only (the test split is "
    "untouched until the chosen run). A best value at the edge of what was tried may lie beyond it."
)


def _best_at_edge(chosen: dict[str, Any]) -> bool:
    """From the trials themselves (records written before `best_at_edge` was recorded have none)."""
    from tunelab.recipes.sweeping import beyond_edge

    if len(chosen["chosen"]) != 1:
        return False
    key, value = next(iter(chosen["chosen"].items()))
    return beyond_edge([t["overrides"][key] for t in chosen["trials"]], value) is not None


def sweep_rows(arms: Sequence[ArmSummary]) -> list[list[str]]:
    rows = []
    for a in arms:
        chosen = a.metrics.get("sweep")
        if not chosen:
            continue
        metric = chosen["metric"]
        tried = []
        for trial in sorted(chosen["trials"], key=lambda t: sorted(t["overrides"].items())):
            values = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in trial["overrides"].values())
            tried.append(f"{values}: {trial[metric]:.4f}")
        notes = []
        if chosen.get("widened"):
            notes.append("widened by " + ", ".join(f"{v:g}" for v in chosen["widened"]))
        if _best_at_edge(chosen):
            notes.append("best at an edge of the values tried")
        rows.append(
            [
                a.name,
                ", ".join(f"{k.split('.')[-1]}={v}" for k, v in chosen["chosen"].items()),
                f"{metric}: " + "; ".join(tried),
                "; ".join(notes) or "-",
            ]
        )
    return rows


SOFT_PROMPT_HEADERS = ["arm", "virtual tokens with a task word nearby", "chance", "cosine to initial (mean)", "nearest"]


def soft_prompt_rows(arms: Sequence[ArmSummary], shown: int = 3) -> list[list[str]]:
    """Prompt-tuning arms: how many virtual tokens have a task word among their nearest vocabulary tokens, the
    rate for random vocabulary tokens, how far training moved them, and the first tokens' neighbours."""
    rows = []
    for a in arms:
        soft = a.metrics.get("soft_prompt")
        if not soft:
            continue
        moved = soft.get("cosine_to_initial")
        nearest = " / ".join(
            ", ".join(repr(token.strip() or token) for token, _ in row[:3]) for row in soft["neighbours"][:shown]
        )
        rows.append(
            [
                a.name,
                f"{sum(soft['task_word'])}/{len(soft['task_word'])} ({soft['task_word_share']:.0%})",
                f"{soft['chance_share']:.0%}",
                f"{sum(moved) / len(moved):.3f}" if moved else "-",
                nearest,
            ]
        )
    return rows


SOFT_PROMPT_NOTE = (
    "Nearest vocabulary tokens (cosine of input embeddings) of each learned virtual token; a task word is a word of "
    "the instruction or one of the 200 most frequent words of the training targets; chance is the same rate for "
    "random vocabulary tokens. A prompt initialised from the instruction's text starts next to task words: the "
    "cosine to the initial embedding shows how far training moved it."
)


SINGLE_REFERENCE_NOTE = (
    "The same predictions scored against each reference alone and averaged over all (prediction, reference) pairs, "
    "as tables that score a multi-reference test set one reference row at a time (F1 x100, 95% CI)."
)
CLAIMS_NOTE = (
    "Each claim's difference is taken example by example on the same examples, with a paired 95% BCa bootstrap CI: "
    "reproduced when the CI lies above the threshold, not reproduced when below, inconclusive when it contains it. "
    "A cost claim compares one measurement per arm as a ratio (x), with no CI."
)
LATER_NOTE = "Run on the finished arms afterwards, each in its own folder inside the arm's run directory."


class TableSection(NamedTuple):
    table_id: str
    heading: str
    note: str
    headers: Sequence[str]
    rows: list[list[str]]


def table_sections(arms: Sequence[ArmSummary], claims: Sequence[dict[str, Any]] = ()) -> dict[str, TableSection]:
    """The report's tables beside the summary, by id, for both the markdown and the HTML report; a table with no
    rows is left out."""
    sections = [
        TableSection(
            "single-reference",
            "Single-reference protocol",
            SINGLE_REFERENCE_NOTE,
            SINGLE_REFERENCE_HEADERS,
            single_reference_rows(arms),
        ),
        TableSection("gains", "Against zero-shot, paired", GAIN_NOTE, GAIN_HEADERS, gain_rows(arms)),
        TableSection("soft-prompts", "Soft prompts", SOFT_PROMPT_NOTE, SOFT_PROMPT_HEADERS, soft_prompt_rows(arms)),
        TableSection("sweeps", "Chosen settings", SWEEP_NOTE, SWEEP_HEADERS, sweep_rows(arms)),
        TableSection("claims", "Claims", CLAIMS_NOTE, CLAIM_HEADERS, claim_rows(claims)),
        TableSection("later", "Later evaluations", LATER_NOTE, LATER_HEADERS, later_evaluations(arms)),
    ]
    return {s.table_id: s for s in sections if s.rows}


def markdown_report(arms: Sequence[ArmSummary], sections: Mapping[str, TableSection]) -> str:
    first = arms[0].metrics
    lines = [
        f"## Comparison: {first.get('model')} on {first.get('dataset')} "
        f"({arms[0].after.get('examples')} {first.get('evaluation_split')} examples)",
        "",
        markdown_table(SUMMARY_HEADERS, summary_rows(arms)),
        "",
        "ROUGE is F1 x100 (rouge-score, stemmed, best of the references); gain is against the zero-shot arm "
        "(or the arm's own base); benchmark change is the mean change on the benchmark suite, after - before "
        "(negative = forgetting; - = no weights changed).",
    ]
    if note := wall_time_note(arms[0].path.parent, arms):
        lines += ["", note]
    for a in arms:
        ctx = a.after.get("context")
        if ctx and ctx.get("prompts_over_window"):
            lines.append(
                f"\n{a.name}: {ctx['prompts_over_window']} prompts longer than the model's "
                f"{ctx['window']}-token window were cut (mean prompt {ctx['mean_prompt_tokens']:.0f} tokens)."
            )
    for section in sections.values():  # in table_sections' order
        lines += ["", f"### {section.heading}", "", section.note, "", markdown_table(section.headers, section.rows)]
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1180px;color:#1d1d1f;padding:0 16px}
h1{font-size:22px}h2{font-size:17px;margin-top:32px;border-bottom:1px solid #eee;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #e2e2e2;padding:4px 8px;
text-align:right;vertical-align:top}th{background:#f6f6f8}td:first-child,th:first-child{text-align:left}
.preds td{text-align:left;max-width:260px;font-size:12px}.cost{display:flex;flex-wrap:wrap;gap:16px}
.note{color:#666;font-size:13px}pre{background:#f6f6f8;padding:8px;font-size:12px;overflow:auto}
"""

# Records script errors and chart sizes into the page itself, so a headless browser can check them.
_SELF_CHECK = """
<script>
window.__errors=[];window.addEventListener('error',function(e){window.__errors.push(String(e.message));
document.body.dataset.errors=JSON.stringify(window.__errors);});
(function(){var ce=console.error;console.error=function(){window.__errors.push(Array.from(arguments).join(' '));
document.body.dataset.errors=JSON.stringify(window.__errors);ce.apply(console,arguments);};})();
window.addEventListener('load',function(){var s={};document.querySelectorAll('svg.chart').forEach(function(c){
var r=c.getBoundingClientRect();s[c.id]=[Math.round(r.width),Math.round(r.height)];});
document.body.dataset.charts=JSON.stringify(s);document.body.dataset.errors=JSON.stringify(window.__errors);});
</script>
"""


def _html_table(table_id: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return (
        f"<table id='{table_id}'><tr>"
        + "".join(f"<th>{escape(h)}</th>" for h in headers)
        + "</tr>"
        + "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
        + "</table>"
    )


def _html_section(section: TableSection) -> str:
    return f"<h2>{escape(section.heading)}</h2><p class='note'>{escape(section.note)}</p>" + _html_table(
        section.table_id, section.headers, section.rows
    )


def html_report(
    arms: Sequence[ArmSummary], title: str, sections: Mapping[str, TableSection], n_examples: int = 5
) -> str:
    names = [a.name for a in arms]
    base = baseline_scores(arms)
    rouge_chart = svg.grouped_bars(
        "chart-rouge",
        names,
        {k: [a.rouge(k) for a in arms] for k in ("rouge1", "rouge2", "rougeL")},
        {k: [a.rouge_ci(k) for a in arms] for k in ("rouge1", "rouge2", "rougeL")},
        y_label="ROUGE F1 (x100) with 95% bootstrap CI",
    )
    points = [(a.name, a.forgetting or 0.0, gain(a, base) or 0.0) for a in arms]
    scatter = svg.scatter(
        "chart-gain-forgetting",
        points,
        "mean benchmark change (after - before; < 0 = forgetting)",
        "task gain: ROUGE-L vs zero-shot",
    )
    cost = [
        svg.horizontal_bars(
            "chart-trainable",
            names,
            [a.metrics.get("cost", {}).get("trainable_percent", 0) for a in arms],
            "trainable parameters (%)",
            lambda v: f"{v:.3f}%",
        ),
        svg.horizontal_bars(
            "chart-storage",
            names,
            [a.metrics.get("cost", {}).get("artefact_bytes", 0) for a in arms],
            "artefact on disk (log scale)",
            human_bytes,
            log=True,
        ),
        svg.horizontal_bars("chart-memory", names, [a.peak_memory for a in arms], "peak training memory", human_bytes),
        svg.horizontal_bars(
            "chart-time", names, [a.training.get("seconds", 0.0) for a in arms], "training time", lambda v: f"{v:.1f} s"
        ),
    ]
    table = (
        "<table id='summary'><tr>"
        + "".join(f"<th>{escape(h)}</th>" for h in SUMMARY_HEADERS)
        + "</tr>"
        + "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in summary_rows(arms))
        + "</table>"
    )
    forgetting_tasks = list(dict.fromkeys(t for a in arms for t in (a.metrics.get("forgetting") or {})))  # config order
    task_metric = {
        t: d.get("metric") for a in arms if not a.is_prompting for t, d in (a.metrics.get("forgetting") or {}).items()
    }
    forgetting_html = ""
    if forgetting_tasks:
        rows = []
        for a in arms:
            f = a.metrics.get("forgetting") or {}
            cells = []
            for t in forgetting_tasks:
                d = f.get(t)
                cells.append(
                    "-"
                    if d is None or a.is_prompting
                    else f"{d['delta']:+.2f} [{d['ci95_low']:+.1f}, {d['ci95_high']:+.1f}]"
                )
            rows.append(
                "<tr><td>" + escape(a.name) + "</td>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>"
            )
        forgetting_html = (
            "<p class='note'>Change of each benchmark score, after - before, with its paired bootstrap "
            "95% CI (negative = forgetting; - = no weights changed).</p>"
            "<table id='forgetting'><tr><th>arm</th>"
            + "".join(f"<th>{escape(t)} ({escape(str(task_metric.get(t) or 'score'))})</th>" for t in forgetting_tasks)
            + "</tr>"
            + "".join(rows)
            + "</table>"
        )
    ids = [p["id"] for p in arms[0].predictions[:n_examples]]
    by_arm = {a.name: {p["id"]: p for p in a.predictions} for a in arms}
    pred_rows = []
    for ex_id in ids:
        refs = by_arm[arms[0].name][ex_id]["references"]
        outputs = "".join(f"<td>{escape(by_arm[a.name].get(ex_id, {}).get('prediction', '-'))}</td>" for a in arms)
        pred_rows.append(
            f"<tr><td>{escape(ex_id)}</td><td>{'<br><br>'.join(escape(r) for r in refs)}</td>{outputs}</tr>"
        )
    preds = (
        "<table class='preds' id='predictions'><tr><th>id</th><th>references</th>"
        + "".join(f"<th>{escape(n)}</th>" for n in names)
        + "</tr>"
        + "".join(pred_rows)
        + "</table>"
    )
    configs = "".join(
        f"<details><summary>{escape(a.name)}</summary><pre>{escape(a.config_text)}</pre></details>" for a in arms
    )

    def section(table_id: str) -> str:
        return _html_section(sections[table_id]) if table_id in sections else ""

    first = arms[0].metrics
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>{_CSS}</style></head><body>{_SELF_CHECK}
<h1>{escape(title)}</h1>
<p class="note">{escape(str(first.get("model")))} · {escape(str(first.get("dataset")))} ·
{arms[0].after.get("examples")} {escape(str(first.get("evaluation_split")))} examples · same data, evaluation and seed for every arm</p>
<h2>Summary</h2>{table}{section("claims")}
<p class="note">ROUGE: F1 x100 ({escape(first.get("protocol", {}).get("rouge", ""))}). Gain: against the zero-shot arm.
Forgetting: mean change over the benchmark suite, after minus before (0 for prompting: weights unchanged).
{escape(wall_time_note(arms[0].path.parent, arms))}</p>
<h2>Task quality</h2>{rouge_chart}{section("single-reference")}{section("gains")}{section("soft-prompts")}{section("sweeps")}
<h2>Gain vs forgetting</h2>{scatter}{forgetting_html}
<h2>Cost</h2><div class="cost">{"".join(cost)}</div>
{section("later")}
<h2>Predictions side by side</h2>{preds}
<h2>Run configs</h2>{configs}
</body></html>
"""


def write_report(directory: str | Path, names: Sequence[str] | None = None) -> Path:
    """Write report.html and report.md into a comparison directory; returns the HTML path."""
    directory = Path(directory)
    arms = load_arms(directory, names)
    sections = table_sections(arms, judge_claims(directory, arms))
    atomic_write_text(directory / "report.md", markdown_report(arms, sections))
    return atomic_write_text(
        directory / "report.html", html_report(arms, f"tunelab comparison: {directory.name}", sections)
    )
