"""Small inline-SVG charts (no JavaScript, no network): grouped bars with error whiskers, a labelled
scatter plot and horizontal bars. Each returns an <svg> element as a string."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

PALETTE = ["#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#3ca951", "#ff8ab7", "#a463f2", "#97bbf5", "#9c6b4e"]
FONT = 'font-family="system-ui, sans-serif" font-size="12"'


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp


def grouped_bars(
    chart_id: str,
    groups: Sequence[str],
    series: dict[str, Sequence[float]],
    errors: dict[str, Sequence[tuple[float, float]]] | None = None,
    y_label: str = "",
    width: int = 760,
    height: int = 320,
) -> str:
    left, right, top, bottom = 50, 10, 30, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    hi = max(
        [v for vals in series.values() for v in vals]
        + [h for errs in (errors or {}).values() for _, h in errs]
        + [1e-9]
    )
    y_max = _nice_max(hi)
    y = lambda v: top + plot_h * (1 - v / y_max)  # noqa: E731
    group_w = plot_w / max(len(groups), 1)
    bar_w = group_w * 0.8 / max(len(series), 1)
    out = [
        f'<svg id="{chart_id}" class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(y_label)}">'
    ]
    for i in range(5):
        v = y_max * i / 4
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>'
            f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" {FONT}>{v:g}</text>'
        )
    for gi, g in enumerate(groups):
        x0 = left + gi * group_w + group_w * 0.1
        for si, (name, vals) in enumerate(series.items()):
            v = vals[gi]
            x = x0 + si * bar_w
            out.append(
                f'<rect class="bar" x="{x:.1f}" y="{y(v):.1f}" width="{bar_w * 0.92:.1f}" '
                f'height="{max(y(0) - y(v), 0):.1f}" fill="{PALETTE[si % len(PALETTE)]}">'
                f"<title>{escape(g)} {escape(name)}: {v:.2f}</title></rect>"
            )
            if errors and name in errors:
                lo, hi_ = errors[name][gi]
                cx = x + bar_w * 0.46
                out.append(
                    f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(lo):.1f}" y2="{y(hi_):.1f}" stroke="#222"/>'
                    f'<line x1="{cx - 3:.1f}" x2="{cx + 3:.1f}" y1="{y(lo):.1f}" y2="{y(lo):.1f}" stroke="#222"/>'
                    f'<line x1="{cx - 3:.1f}" x2="{cx + 3:.1f}" y1="{y(hi_):.1f}" y2="{y(hi_):.1f}" stroke="#222"/>'
                )
        out.append(
            f'<text x="{left + (gi + 0.5) * group_w:.1f}" y="{top + plot_h + 16}" text-anchor="middle" '
            f"{FONT}>{escape(g)}</text>"
        )
    for si, name in enumerate(series):
        out.append(
            f'<rect x="{left + si * 110}" y="{height - 22}" width="10" height="10" '
            f'fill="{PALETTE[si % len(PALETTE)]}"/><text x="{left + si * 110 + 14}" y="{height - 13}" '
            f"{FONT}>{escape(name)}</text>"
        )
    out.append(f'<text x="12" y="{top - 12}" {FONT} font-weight="600">{escape(y_label)}</text></svg>')
    return "".join(out)


def nice_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) inside [lo, hi]; 0 is one of them when inside."""
    import math

    raw = (hi - lo) / max(target - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = min((m * magnitude for m in (1, 2, 5, 10)), key=lambda c: abs(math.log(c / raw)))  # nearest nice step
    first = math.ceil(lo / step) * step
    count = int(math.floor((hi - first) / step + 1e-9)) + 1
    return [round(first + i * step, 10) + 0.0 for i in range(count)]


def scatter(
    chart_id: str,
    points: Sequence[tuple[str, float, float]],
    x_label: str,
    y_label: str,
    width: int = 760,
    height: int = 340,
) -> str:
    left, right, top, bottom = 60, 30, 30, 50
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [p[1] for p in points] + [0.0]
    ys = [p[2] for p in points] + [0.0]
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = min(ys), max(ys)
    pad_x = (x_hi - x_lo) * 0.15 or 1.0
    pad_y = (y_hi - y_lo) * 0.15 or 1.0
    x_lo, x_hi, y_lo, y_hi = x_lo - pad_x, x_hi + pad_x, y_lo - pad_y, y_hi + pad_y
    X = lambda v: left + plot_w * (v - x_lo) / (x_hi - x_lo)  # noqa: E731
    Y = lambda v: top + plot_h * (1 - (v - y_lo) / (y_hi - y_lo))  # noqa: E731
    out = [
        f'<svg id="{chart_id}" class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(y_label)} vs {escape(x_label)}">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>',
        f'<line x1="{X(0):.1f}" x2="{X(0):.1f}" y1="{top}" y2="{top + plot_h}" stroke="#999" stroke-dasharray="4 3"/>',
        f'<line x1="{left}" x2="{left + plot_w}" y1="{Y(0):.1f}" y2="{Y(0):.1f}" stroke="#999" stroke-dasharray="4 3"/>',
    ]
    for i, (name, xv, yv) in enumerate(points):
        # a label that would run past the right edge goes to the left of its point
        right_side = X(xv) + 10 + 7 * len(name) <= left + plot_w
        out.append(
            f'<circle class="point" cx="{X(xv):.1f}" cy="{Y(yv):.1f}" r="7" fill="{PALETTE[i % len(PALETTE)]}">'
            f"<title>{escape(name)}: {x_label} {xv:+.2f}, {y_label} {yv:+.2f}</title></circle>"
            f'<text class="point-label" x="{X(xv) + (10 if right_side else -10):.1f}" y="{Y(yv) + 4:.1f}" '
            f'text-anchor="{"start" if right_side else "end"}" {FONT}>{escape(name)}</text>'
        )
    for v in nice_ticks(x_lo, x_hi):
        out.append(
            f'<text class="x-tick" x="{X(v):.1f}" y="{top + plot_h + 16}" text-anchor="middle" {FONT}>{v:+g}</text>'
        )
    for v in nice_ticks(y_lo, y_hi):
        out.append(f'<text class="y-tick" x="{left - 6}" y="{Y(v) + 4:.1f}" text-anchor="end" {FONT}>{v:+g}</text>')
    out.append(
        f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle" {FONT}>{escape(x_label)}</text>'
        f'<text x="12" y="{top - 12}" {FONT} font-weight="600">{escape(y_label)}</text></svg>'
    )
    return "".join(out)


def horizontal_bars(
    chart_id: str,
    labels: Sequence[str],
    values: Sequence[float],
    title: str,
    fmt=lambda v: f"{v:g}",
    log: bool = False,
    width: int = 370,
    row: int = 24,
) -> str:
    left, right, top = 110, 70, 28
    height = top + row * len(labels) + 10
    plot_w = width - left - right
    scale = [math.log10(1 + v) for v in values] if log else list(values)
    hi = max(scale + [1e-9])
    out = [
        f'<svg id="{chart_id}" class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f'<text x="4" y="16" {FONT} font-weight="600">{escape(title)}</text>',
    ]
    for i, (lab, v, s) in enumerate(zip(labels, values, scale)):
        yy = top + i * row
        w = plot_w * s / hi
        out.append(
            f'<text x="{left - 6}" y="{yy + 14}" text-anchor="end" {FONT}>{escape(lab)}</text>'
            f'<rect class="bar" x="{left}" y="{yy + 3}" width="{max(w, 1):.1f}" height="{row - 8}" '
            f'fill="{PALETTE[i % len(PALETTE)]}"><title>{escape(lab)}: {escape(fmt(v))}</title></rect>'
            f'<text x="{left + w + 4:.1f}" y="{yy + 14}" {FONT}>{escape(fmt(v))}</text>'
        )
    out.append("</svg>")
    return "".join(out)
