"""The statistics page's charts as data: what each bar, value and label is, and where it goes.

The drawing itself is the `bar_chart` macro in `templates/charts.html`; this module only measures.
Small multiples: one labelled row of bars per series, a column per month, each bar with its value
written above it. A hidden value (None: fewer than five cases) draws no bar, only an en dash, so it can
never be read as zero; a zero draws no bar and the text 0. Colours are Okabe-Ito (distinguishable
with colour-vision deficiencies); every series also has its own text label and every other series a
hatch pattern, so no reading depends on colour. Every chart has a table of the same figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.store.overview import BREAKDOWNS

__all__ = ["DASH", "Bar", "Chart", "Point", "Series", "SeriesRow", "overdue_share", "stats_charts",
           "value_text"]

DASH = "\u2013"  # an en dash for "no value"
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#6b6b00", "#4d4d4d")
_BAR_H = 44
_ROW_H = 86
_LEFT = 8


@dataclass(frozen=True)
class Series:
    key: str
    label: str
    values: list[float | None]
    unit: str = "count"  # count | hours | percent

    @property
    def texts(self) -> list[str]:
        return [value_text(v, self.unit) for v in self.values]


@dataclass(frozen=True)
class Bar:
    x: str
    y: str
    width: str
    height: str
    hatched: bool


@dataclass(frozen=True)
class Point:
    """One month of one series: its bar (if any) and the text above it (its value, or a dash)."""

    month: str
    text: str
    x: str
    text_y: str
    hidden: bool
    bar: Bar | None = None


@dataclass(frozen=True)
class SeriesRow:
    key: str
    label: str
    colour: str
    label_y: int
    base: int
    points: list[Point]


@dataclass(frozen=True)
class Chart:
    cid: str
    title: str
    desc: str
    months: list[str]
    width: int
    height: int
    rows: list[SeriesRow]
    axis: list[tuple[str, str]]  # (x, month)
    tabled: list[Series] = field(default_factory=list)
    left: int = _LEFT

    @property
    def table_headers(self) -> list[tuple[str, bool]]:
        return [(s.label, True) for s in self.tabled]


def value_text(value: float | None, unit: str) -> str:
    if value is None:
        return DASH
    if unit == "hours":
        return f"{value:.1f}"
    if unit == "percent":
        return f"{value:.1f} %"
    return str(int(value))


def overdue_share(row: Mapping[str, Any]) -> float | None:
    """Overdue / referrals in per cent, or None when either is hidden or there were no referrals."""
    referrals, overdue = row["referrals"], row["overdue"]
    if referrals is None or overdue is None or referrals == 0:
        return None
    return 100.0 * int(overdue) / int(referrals)


def measure(cid: str, title: str, desc: str, months: Sequence[str], series: Sequence[Series],
            tabled: Sequence[Series]) -> Chart:
    n = max(len(months), 1)
    col = max(56, 900 // n)
    width = 2 * _LEFT + n * col
    height = 6 + len(series) * _ROW_H + 24
    top_value = max((v for s in series for v in s.values if v is not None), default=0.0) or 1.0
    rows = []
    for i, s in enumerate(series):
        y0 = 6 + i * _ROW_H
        base = y0 + _ROW_H - 8
        points = []
        for j, (month, value) in enumerate(zip(months, s.values, strict=True)):
            cx = _LEFT + j * col + col / 2
            bar_w = col * 0.56
            text = value_text(value, s.unit)
            if value is None:
                points.append(Point(month, text, f"{cx:.1f}", str(base - 4), hidden=True))
                continue
            h = round(_BAR_H * value / top_value, 1) if value > 0 else 0.0
            bar = None
            if h > 0:
                h = max(h, 1.0)
                bar = Bar(f"{cx - bar_w / 2:.1f}", f"{base - h:.1f}", f"{bar_w:.1f}", str(h), bool(i % 2))
            points.append(Point(month, text, f"{cx:.1f}", f"{base - h - 4:.1f}", hidden=False, bar=bar))
        rows.append(SeriesRow(s.key, s.label, PALETTE[i % len(PALETTE)], y0 + 13, base, points))
    axis = [(f"{_LEFT + j * col + col / 2:.1f}", month) for j, month in enumerate(months)]
    return Chart(cid, title, desc, list(months), width, height, rows, axis, list(tabled))


def stats_charts(rows: Sequence[Mapping[str, Any]], t: Mapping[str, str], area_text: str) -> list[Chart]:
    """The five charts of the statistics page, from `load_statistics`'s rows, in the page's language."""
    months = [r["month"] for r in rows]

    def counts(group: str, prefix: str) -> list[Series]:
        keys = next(keys for name, keys in BREAKDOWNS if name == group)
        return [Series(k, t[f"{prefix}_{k}"], [r[group][k] for r in rows]) for k in keys]

    first_reply = [Series("median", t["median_h"], [r["first_reply_hours"]["median"] for r in rows], "hours"),
                   Series("p90", t["p90_h"], [r["first_reply_hours"]["p90"] for r in rows], "hours")]
    share = [Series("overdue_share", t["overdue_share"], [overdue_share(r) for r in rows], "percent")]
    share_table = [Series("referrals", t["referrals"], [r["referrals"] for r in rows]),
                   Series("overdue", t["overdue"], [r["overdue"] for r in rows]), *share]
    charts = [
        ("first-reply", t["chart_first_reply"], first_reply, first_reply),
        ("overdue-share", t["chart_overdue_share"], share, share_table),
        ("outcomes", t["chart_outcomes"], counts("outcomes", "o"), counts("outcomes", "o")),
        ("findings", t["chart_findings"], counts("findings", "f"), counts("findings", "f")),
        ("quality", t["chart_quality"], counts("referral_quality", "q"), counts("referral_quality", "q")),
    ]
    span = f"{months[0]}{DASH}{months[-1]}" if months else ""
    return [measure(cid, title, t["chart_desc"].format(title=title, area=area_text, span=span, dash=DASH),
                    months, drawn, tabled)
            for cid, title, drawn, tabled in charts]
