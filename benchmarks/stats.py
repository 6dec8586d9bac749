"""Medians and spreads of repeated runs, and the rows RESULTS.md is made of."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Series:
    """One figure measured over several runs."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(float(value))

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def low(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def high(self) -> float:
        return max(self.values) if self.values else float("nan")

    def show(self, fmt: str = "{:,.0f}") -> str:
        if not self.values:
            return "–"
        if len(self.values) == 1:
            return fmt.format(self.median)
        return f"{fmt.format(self.median)} ({fmt.format(self.low)}–{fmt.format(self.high)})"


@dataclass
class Row:
    """A line of a scenario's table: a figure for the floor and for frontdesk, their ratio and the target."""

    what: str
    unit: str
    floor: Series | None
    frontdesk: Series
    target: str = ""
    met: bool | None = None
    fmt: str = "{:,.0f}"
    ratio: float | None = None  # frontdesk / floor of the medians, unless given
    note: str = ""

    def __post_init__(self) -> None:
        if self.ratio is None and self.floor is not None and self.floor.values and self.floor.median:
            self.ratio = self.frontdesk.median / self.floor.median


def ratio_series(num: list[float], den: list[float]) -> Series:
    """Run-by-run ratios (runs are interleaved, so run i of each shares the machine's state)."""
    return Series([a / b for a, b in zip(num, den, strict=False) if b])
