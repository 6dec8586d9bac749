"""RESULTS.md: one table per scenario, then the machine, the versions and the command."""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks.harness import Section


def _met(value: bool | None) -> str:
    return "" if value is None else ("yes" if value else "**no**")


def render(
    sections: list[Section],
    *,
    summary: list[str],
    machine: dict[str, str],
    versions: dict[str, str],
    command: str,
    date: str,
    seconds: float,
    load: float = 0.0,
    preface: str = "",
) -> str:
    out = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m benchmarks.run`); do not edit by hand — the closing notes",
        "excepted, which live in `benchmarks/NOTES.md` and are copied in. Each figure is the median of",
        "the runs, with the lowest and highest in brackets. Floors and frontdesk are measured in the same",
        "run, on the same machine and Redis, alternately; the ratio is frontdesk ÷ floor of the medians.",
        "Timings are never part of a pass/fail test.",
        "",
        f"- Date: {date}; the whole run took {seconds / 60:.1f} min.",
        f"- Command: `{command}`" + (" (what `make bench` runs)" if command == "python -m benchmarks.run" else ""),
        f"- Machine: {machine['nproc']} CPUs ({machine['cpu']}), {machine['memory']} memory, Linux {machine['kernel']}; "
        "servers, Redis, fakes and load generators all share these CPUs, on loopback. "
        f"Load average (1 min) when the run began: {load:.2f}.",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "",
    ]
    if summary:
        out += ["## Summary", "", "| scenario | figure | target | met? |", "|---|---|---|---|", *summary, ""]
    if preface:
        out += [preface.strip(), ""]
    for sec in sections:
        out += [f"## {sec.title}", "", sec.setup, ""]
        if sec.rows:
            out += [
                f"| measure | unit | {sec.columns[0]} | {sec.columns[1]} | ratio | target | met? |",
                "|---|---|---|---|---|---|---|",
            ]
            for row in sec.rows:
                floor = row.floor.show(row.fmt) if row.floor is not None else "–"
                ratio = f"{row.ratio:.2f}×" if row.ratio is not None else ""
                what = row.what + (f" ({row.note})" if row.note else "")
                out.append(
                    f"| {what} | {row.unit} | {floor} | {row.frontdesk.show(row.fmt)} | {ratio} | {row.target} | {_met(row.met)} |"
                )
            out.append("")
        out += [f"- {note}" for note in sec.notes]
        if sec.notes:
            out.append("")
        if sec.extra:
            out += ["```", sec.extra.rstrip(), "```", ""]
    return "\n".join(out).rstrip() + "\n"


def notes(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def with_notes(results: str, preface: str) -> str:
    """`results` (a RESULTS.md) with its copy of the notes replaced by `preface`, the figures untouched.

    The copy runs from after the summary table to the first scenario's section (`## 1. …`).
    """
    lines = results.splitlines()
    if "## Summary" not in lines:
        raise ValueError("no '## Summary' in the results")
    start = lines.index("## Summary") + 1
    while start < len(lines) and (not lines[start].strip() or lines[start].startswith("|")):
        start += 1
    end = next((i for i in range(start, len(lines)) if re.match(r"## \d", lines[i])), len(lines))
    return "\n".join([*lines[:start], preface.strip(), "", *lines[end:]]).rstrip() + "\n"
