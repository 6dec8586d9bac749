"""RESULTS.md's copy of NOTES.md can be refreshed without measuring again (`benchmarks.run --notes`)."""

from __future__ import annotations

import pytest

from benchmarks.harness import Section
from benchmarks.report import render, with_notes
from benchmarks.stats import Row, Series


def _results(preface: str) -> str:
    sec = Section(title="1. Webhook ingest", setup="wrk, 50 connections.")
    sec.rows.append(Row("throughput", "req/s", Series([100.0, 110.0]), Series([150.0, 160.0]), "≥ 1.0× floor", True))
    return render(
        [sec, Section(title="9a. Curve", setup="lengths")],
        summary=["| 1 | throughput 155 req/s | ≥ 1.0× floor | yes |"],
        machine={"nproc": "2", "cpu": "x", "memory": "1 GiB", "kernel": "6"},
        versions={"python": "3.11"},
        command="python -m benchmarks.run",
        date="2026-12-06 21:17 UTC",
        seconds=60.0,
        preface=preface,
    )


def test_the_notes_are_replaced_and_every_figure_is_kept() -> None:
    old = "## How to read this\n\nOld words.\n\n## Round 3\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    new = "## How to read this\n\nNew words, and a table:\n\n| c |\n|---|\n| 3 |\n"
    assert with_notes(_results(old), new) == _results(new)
    assert with_notes(_results(""), new) == _results(new)


def test_results_without_a_summary_are_refused() -> None:
    with pytest.raises(ValueError, match="Summary"):
        with_notes("# Benchmarks\n\n## 1. Webhook ingest\n", "notes")
