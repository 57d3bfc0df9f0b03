"""Inline SVG charts for the HTML report: line charts and horizontal bar charts, no dependencies.

The report is one self-contained file, so its charts are SVG markup written into the page (crisp at any
zoom, searchable, no image files, no plotting library needed to view a run).
"""

from __future__ import annotations

import math
from html import escape

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf"]


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def _label(v: float) -> str:
    if v == 0:
        return "0"
    if float(v).is_integer() and abs(v) < 1e9:
        return f"{int(v):,}"
    if abs(v) >= 1e4 or abs(v) < 1e-2:
        return f"{v:.2g}"
    return f"{v:.3g}"


def line_chart(series: dict[str, list[tuple[float, float]]], *, title: str, xlabel: str, ylabel: str,
               width: int = 640, height: int = 320, logx: bool = False, hline: float | None = None) -> str:
    """An SVG line chart of name -> [(x, y)] (non-finite points skipped); '' when there is nothing to draw."""
    clean = {n: [(x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y) and (x > 0 or not logx)]
             for n, pts in series.items()}
    clean = {n: pts for n, pts in clean.items() if pts}
    if not clean:
        return ""
    fx = (lambda x: math.log10(x)) if logx else (lambda x: x)
    xs = [fx(x) for pts in clean.values() for x, _ in pts]
    ys = [y for pts in clean.values() for _, y in pts] + ([hline] if hline is not None else [])
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    pad_l, pad_r, pad_t, pad_b = 64, 150, 28, 44
    sx = lambda x: pad_l + (fx(x) - x0) / (x1 - x0) * (width - pad_l - pad_r)
    sy = lambda y: height - pad_b - (y - y0) / (y1 - y0) * (height - pad_t - pad_b)
    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
           f'<text x="{(width - pad_r + pad_l) / 2}" y="16" text-anchor="middle" class="t">{escape(title)}</text>',
           f'<line x1="{pad_l}" y1="{height - pad_b}" x2="{width - pad_r}" y2="{height - pad_b}" class="ax"/>',
           f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{height - pad_b}" class="ax"/>',
           f'<text x="{(width - pad_r + pad_l) / 2}" y="{height - 8}" text-anchor="middle">{escape(xlabel)}</text>',
           f'<text x="14" y="{(height - pad_b + pad_t) / 2}" text-anchor="middle" '
           f'transform="rotate(-90 14 {(height - pad_b + pad_t) / 2})">{escape(ylabel)}</text>']
    for v in _ticks(y0, y1):
        out.append(f'<text x="{pad_l - 6}" y="{sy(v) + 4:.1f}" text-anchor="end">{_label(v)}</text>')
        out.append(f'<line x1="{pad_l}" y1="{sy(v):.1f}" x2="{width - pad_r}" y2="{sy(v):.1f}" class="grid"/>')
    for v in _ticks(x0, x1):
        real = 10 ** v if logx else v
        out.append(f'<text x="{sx(real):.1f}" y="{height - pad_b + 16}" text-anchor="middle">{_label(real)}</text>')
    if hline is not None:
        out.append(f'<line x1="{pad_l}" y1="{sy(hline):.1f}" x2="{width - pad_r}" y2="{sy(hline):.1f}" '
                   f'class="ref"/>')
    for i, (name, pts) in enumerate(clean.items()):
        c = COLORS[i % len(COLORS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.8" points="{path}"/>')
        if len(pts) <= 40:
            out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{c}"/>' for x, y in pts]
        out.append(f'<text x="{width - pad_r + 8}" y="{pad_t + 14 + 16 * i}" fill="{c}">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(bars: list[tuple[str, float]], *, title: str, width: int = 640, unit: str = "") -> str:
    """Horizontal bars (label, value >= 0), largest value full width; '' when empty."""
    if not bars:
        return ""
    row, pad_l, pad_t = 20, 230, 26
    height = pad_t + row * len(bars) + 10
    top = max(v for _, v in bars) or 1
    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
           f'<text x="{width / 2}" y="16" text-anchor="middle" class="t">{escape(title)}</text>']
    for i, (label, v) in enumerate(bars):
        y = pad_t + i * row
        w = max(1.0, v / top * (width - pad_l - 90))
        out += [f'<text x="{pad_l - 6}" y="{y + 13}" text-anchor="end">{escape(label)}</text>',
                f'<rect x="{pad_l}" y="{y + 2}" width="{w:.1f}" height="{row - 6}" fill="{COLORS[i % len(COLORS)]}"/>',
                f'<text x="{pad_l + w + 4:.1f}" y="{y + 13}">{_label(v)}{escape(unit)}</text>']
    out.append("</svg>")
    return "\n".join(out)
