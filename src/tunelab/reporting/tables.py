"""Plain-text tables for the terminal (and Markdown, which renders the same)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def before_after_table(before: dict[str, Any] | None, after: dict[str, Any]) -> str:
    """ROUGE/BLEU before and after training, with the change."""
    rows = []
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        if key in after.get("rouge", {}):
            a = after["rouge"][key]["f1"]
            b = before["rouge"][key]["f1"] if before and "rouge" in before else None
            rows.append([f"{key} F1", "-" if b is None else b, a, "-" if b is None else f"{a - b:+.2f}"])
    if "rouge" in after:
        a = after["rouge"]["rouge1"]
        b = before["rouge"]["rouge1"] if before and "rouge" in before else None
        for part in ("precision", "recall"):
            rows.append(
                [
                    f"rouge1 {part}",
                    "-" if b is None else b[part],
                    a[part],
                    "-" if b is None else f"{a[part] - b[part]:+.2f}",
                ]
            )
    if "bleu" in after:
        a = after["bleu"]["score"]
        b = before["bleu"]["score"] if before and "bleu" in before else None
        rows.append(["BLEU", "-" if b is None else b, a, "-" if b is None else f"{a - b:+.2f}"])
    if not before:  # one evaluation: a plain table, not empty before/change columns
        return markdown_table(["metric", "score"], [[r[0], r[2]] for r in rows])
    return markdown_table(["metric", "before", "after", "change"], rows)


def cost_table(cost: dict[str, Any], training: dict[str, Any] | None) -> str:
    rows = [
        ["trainable parameters", f"{cost['trainable_parameters']:,} ({cost['trainable_percent']:.3f}%)"],
        [
            "artefact on disk",
            f"{human_bytes(cost['artefact_bytes'])} vs full checkpoint {human_bytes(cost['full_checkpoint_bytes'])}",
        ],
    ]
    if training:
        mem = training["memory"]
        peak = mem.get("peak_cuda_allocated_bytes", mem["peak_rss_bytes"])
        rows += [
            ["training time", f"{training['seconds']:.1f} s, {training['steps']} steps"],
            ["throughput", f"{training['completion_tokens_per_second']:.1f} completion tok/s"],
            ["peak memory", f"{human_bytes(peak)} ({mem['measured']})"],
        ]
    return markdown_table(["cost", "value"], rows)
