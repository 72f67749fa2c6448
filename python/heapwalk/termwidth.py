"""Fitting text output to a terminal: its width, wide tables split, long lines wrapped.

Pure functions over strings (colour codes take no room), shared by the CLI (``$COLUMNS``, the
terminal's size) and gdb (its ``width`` setting).  ``None`` as a width means "no limit" (a pipe
with no ``$COLUMNS``, ``--json``).
"""

from __future__ import annotations

import os
import re
from typing import Any, List, Optional, Sequence

#: The width assumed for a terminal whose size cannot be read.
DEFAULT_WIDTH = 80
#: Narrower than this, nothing is readable anyway: lines are fitted to this.
MIN_WIDTH = 40

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def visible_len(text: str) -> int:
    """Length of ``text`` as displayed (ANSI codes take no room)."""
    return len(_ANSI.sub("", text))


def _columns_env() -> Optional[int]:
    value = os.environ.get("COLUMNS", "").strip()
    if value.isdigit() and int(value) > 0:
        return max(int(value), MIN_WIDTH)
    return None


def stream_width(stream: Any) -> Optional[int]:
    """The width to fit output for ``stream`` to: ``$COLUMNS`` when set, else the terminal's
    size, else 80 for a terminal whose size is unknown, else None (a pipe or a file)."""
    env = _columns_env()
    if env is not None:
        return env
    try:
        fileno = stream.fileno()
        if not os.isatty(fileno):
            return None
    except (AttributeError, OSError, ValueError):
        return None
    try:
        columns = os.get_terminal_size(fileno).columns
    except OSError:
        columns = 0
    return max(columns, MIN_WIDTH) if columns > 0 else DEFAULT_WIDTH


def gdb_width(value: Any) -> Optional[int]:
    """The width for gdb's ``width`` parameter: None when unlimited (0/None, as in batch mode
    with ``set width 0``), at least :data:`MIN_WIDTH` otherwise."""
    try:
        width = int(value)
    except (TypeError, ValueError):
        return None
    if width <= 0 or width >= 1 << 20:
        return None
    return max(width, MIN_WIDTH)


def column_groups(widths: Sequence[int], width: int, keep: int = 1, gap: int = 2,
                  indent: int = 0) -> List[List[int]]:
    """Split table columns into groups that each fit ``width``: every group repeats the first
    ``keep`` (key) columns, the others go in order.  One group (all columns) when they fit."""
    total = indent + sum(widths) + gap * (len(widths) - 1)
    if total <= width or len(widths) <= keep + 1:
        return [list(range(len(widths)))]
    key = list(range(min(keep, len(widths))))
    base = indent + sum(widths[i] for i in key) + gap * max(len(key) - 1, 0)
    groups: List[List[int]] = []
    current: List[int] = []
    used = base
    for i in range(len(key), len(widths)):
        need = gap + widths[i]
        if current and used + need > width:
            groups.append(key + current)
            current, used = [], base
        current.append(i)
        used += need
    if current:
        groups.append(key + current)
    return groups


def _cut(text: str, width: int) -> int:
    """Index in ``text`` where its first ``width`` visible characters end."""
    seen = 0
    i = 0
    while i < len(text):
        m = _ANSI.match(text, i)
        if m:
            i = m.end()
            continue
        if seen == width:
            return i
        seen += 1
        i += 1
    return i


#: A space before one of these is not a place to break a line (``15.3 KiB`` stays whole).
_UNIT = re.compile(r" (?:B|KiB|MiB|GiB|TiB|bytes)\b")


def _break_at(text: str, end: int, floor: int) -> int:
    """The last space in ``text[:end + 1]`` after ``floor`` that does not split a size from its
    unit, or -1."""
    space = text.rfind(" ", 0, end + 1)
    while space > floor and _UNIT.match(text, space):
        space = text.rfind(" ", 0, space)
    return space if space > floor else -1


def wrap_line(line: str, width: int) -> List[str]:
    """``line`` as lines of at most ``width`` visible characters: broken at spaces, the
    continuation indented two more than the line (a word longer than the room is cut)."""
    if visible_len(line) <= width:
        return [line]
    lead = len(line) - len(line.lstrip(" "))
    hang = " " * min(lead + 2, width // 2)
    out: List[str] = []
    rest = line
    first = True
    while True:
        prefix = "" if first else hang
        room = width - len(prefix)
        if visible_len(rest) <= room:
            out.append(prefix + rest)
            break
        end = _cut(rest, room)
        space = _break_at(rest, end, lead if first else 0)
        if space > 0:
            head, rest = rest[:space].rstrip(" "), rest[space:].lstrip(" ")
        else:
            head, rest = rest[:end], rest[end:].lstrip(" ")
        out.append(prefix + head)
        first = False
        if not rest:
            break
    return out


def fit(lines: Sequence[str], width: Optional[int]) -> List[str]:
    """Every line of ``lines`` at most ``width`` visible characters wide (wrapped)."""
    if not width:
        return list(lines)
    out: List[str] = []
    for line in lines:
        for part in line.split("\n"):
            out.extend(wrap_line(part, width))
    return out
