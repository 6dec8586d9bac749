"""Lua scripts whose KEYS and ARGV have names.

A script's body refers to its keys and arguments by name. `Script` numbers them
once, from the layout its builder declares, and writes the Lua locals that bind
each name to its KEYS[i] or ARGV[i] in front of the body; `pack` lays the Python
side's values out by the same names. A run of keys sized by a constant (one
status index per STATUSES) is a `Group`: the body sees its offset and size
(`status_at`, `status_n`), so adding a status moves every later position on both
sides at once, and a call with the wrong number of them fails before Redis.

An argument list sized by the call (the new events of a step) is a `Group`
without a size. The body sees `<name>_at` and `<name>_n` for it too; every such
list but the last has its length sent as an argument of its own, the last one
takes the rest of ARGV. Such lists come after every other argument, because
their lengths decide where the following ones start.

The bindings are plain locals: a few table reads per call, against about a
microsecond for each redis.call (benchmarks/, scenario 6).
"""

from __future__ import annotations

import keyword
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

_LUA_WORDS = frozenset(
    "and break do else elseif end false for function if in local nil not or repeat return then true until while".split()
)


@dataclass(frozen=True)
class Group:
    """A run of keys or arguments under one name: `size` of them, or, with no size, as many as the call brings."""

    name: str
    size: int | None = None


Slot = str | Group


class Script:
    """A Lua body, the layout of its KEYS and ARGV, and the generated bindings in front of it."""

    def __init__(self, body: str, *, keys: Sequence[Slot] = (), args: Sequence[Slot] = ()) -> None:
        self.body = body
        self.keys = tuple(keys)
        self.args = tuple(args)
        _check_names([*self.keys, *self.args])
        _check_keys(self.keys)
        self._counted, self._rest = _check_args(self.args)
        self.pack = _packer(self.keys, self.args, self._counted, self._rest)
        self.source = self._prelude() + body

    # ------------------------------------------------------------ Lua side
    def _prelude(self) -> str:
        lines = _bind("KEYS", self.keys)
        fixed = [slot for slot in self.args if not _open(slot)]
        lines += _bind("ARGV", fixed)
        at = _width(fixed)
        for i, group in enumerate(self._counted, start=at + 1):  # each count, right after the fixed arguments
            lines.append(f"local {group.name}_n = tonumber(ARGV[{i}])")
        offset = str(at + len(self._counted))
        for group in self._counted:
            lines.append(f"local {group.name}_at = {offset}")
            offset = f"{group.name}_at + {group.name}_n"
        if self._rest is not None:
            lines.append(f"local {self._rest.name}_at = {offset}")
            lines.append(f"local {self._rest.name}_n = #ARGV - {self._rest.name}_at")
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------ Python side
    # pack(**values) -> (keys, args) for a call, each value placed by its name; a group takes a sequence.
    pack: Callable[..., tuple[list[Any], list[Any]]]


def _packer(
    keys: Sequence[Slot], args: Sequence[Slot], counted: list[Group], rest: Group | None
) -> Callable[..., tuple[list[Any], list[Any]]]:
    """A function taking every slot as a keyword and returning (keys, args) in the script's order.

    Written out and compiled once per script, as dataclasses writes an __init__: a save packs
    25 slots per step, and a loop over a layout cost it about 6 µs where this costs about 1.
    The names are checked Lua (so Python) identifiers; nothing else reaches the source.
    """
    fixed = [slot for slot in args if not _open(slot)]
    checks = [
        f"    if len({slot.name}) != {slot.size}: _wrong({slot.name!r}, {slot.size}, {slot.name})"
        for slot in (*keys, *fixed)
        if isinstance(slot, Group) and slot.size is not None
    ]
    lists = [*counted, *([rest] if rest else [])]
    arg_items = [*map(_item, fixed), *(f"len({g.name})" for g in counted), *(f"*{g.name}" for g in lists)]
    names = ", ".join(_name(slot) for slot in (*keys, *args))
    source = "\n".join(
        [
            f"def pack(*, {names}):",
            *checks,
            f"    return [{', '.join(map(_item, keys))}], [{', '.join(arg_items)}]",
        ]
    )
    namespace: dict[str, Any] = {"_wrong": _wrong}
    exec(compile(source, "<script layout>", "exec"), namespace)  # only checked identifiers: see the docstring
    return namespace["pack"]


def _item(slot: Slot) -> str:
    return f"*{slot.name}" if isinstance(slot, Group) else slot


def _wrong(name: str, size: int, items: Sequence[Any]) -> None:
    raise ValueError(f"script group {name!r} takes {size} values, got {len(items)}")


def _name(slot: Slot) -> str:
    return slot.name if isinstance(slot, Group) else slot


def _open(slot: Slot) -> bool:
    return isinstance(slot, Group) and slot.size is None


def _width(slots: Sequence[Slot]) -> int:
    return sum(slot.size or 0 if isinstance(slot, Group) else 1 for slot in slots)


def _bind(table: str, slots: Sequence[Slot]) -> list[str]:
    """`local name = KEYS[i]` for each slot; `local g_at, g_n = offset, size` for a group."""
    lines, at = [], 0
    for slot in slots:
        if isinstance(slot, Group):
            size = f"#{table} - {at}" if slot.size is None else str(slot.size)
            lines.append(f"local {slot.name}_at, {slot.name}_n = {at}, {size}")
            at += slot.size or 0
        else:
            at += 1
            lines.append(f"local {slot} = {table}[{at}]")
    return lines


def _check_names(slots: Sequence[Slot]) -> None:
    seen: set[str] = set()
    for slot in slots:
        name = _name(slot)
        if not name.isidentifier() or keyword.iskeyword(name) or name in _LUA_WORDS or name in seen:
            raise ValueError(f"script slot {name!r}: not a usable Lua name, or named twice")
        seen.add(name)


def _check_keys(keys: Sequence[Slot]) -> None:
    if any(_open(slot) for slot in keys[:-1]):
        raise ValueError("only the last group of keys may be open-ended")


def _check_args(args: Sequence[Slot]) -> tuple[list[Group], Group | None]:
    """The open-ended argument lists that send their length, and the last one (which takes the rest)."""
    first_open = next((i for i, slot in enumerate(args) if _open(slot)), len(args))
    if not all(_open(slot) for slot in args[first_open:]):
        raise ValueError("open-ended argument lists come after every other argument")
    groups = [slot for slot in args[first_open:] if isinstance(slot, Group)]
    if not groups:
        return [], None
    return groups[:-1], groups[-1]
