"""``bins --show N`` / ``tcache --show N`` (issue 15): the rest of a list's ``… +N``, on demand.

Counts come from the program's own malloc_info (the oracle the suite checks elsewhere): every
list line shows min(N, count) addresses and ``… +rest`` for the others; ``--show all`` every one.
"""

from __future__ import annotations

import re

import pytest

from hwkit import describe, no_traceback, run_cli

ADDR = re.compile(r"0x[0-9a-f]+")


@pytest.fixture(scope="module")
def core(corpora):
    return corpora.core("arenas", "4", "0").core


def list_lines(text: str) -> list[tuple[int, list[str], int]]:
    """(count, addresses, rest) of each table row that lists chunks."""
    rows = []
    for line in text.splitlines():
        m = re.match(r"\s+\d+\s+(?:\w+\s+)?(\d+)\s+[\d.]+ (?:B|KiB|MiB|GiB)\s+(0x.*)$", line)
        if m:
            rest = re.search(r"… \+(\d+)", m.group(2))
            rows.append((int(m.group(1)), ADDR.findall(m.group(2)), int(rest.group(1)) if rest else 0))
    return rows


@pytest.mark.parametrize("cmd", ["bins", "tcache"])
@pytest.mark.parametrize("show", ["1", "2", "all"])
def test_show_n_addresses_per_list(core, cmd, show):
    r = run_cli(cmd, core, "--show", show, extra_env={"COLUMNS": "400"})
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    rows = list_lines(r.stdout)
    assert rows, describe(r)
    for count, addrs, rest in rows:
        want = count if show == "all" else min(count, int(show))
        assert len(addrs) == want and rest == count - want, (count, addrs, rest)
        assert len(set(addrs)) == len(addrs)


def test_show_negative_is_a_usage_error(core):
    r = run_cli("bins", core, "--show", "-1")
    assert r.returncode == 2 and "must be 0 (no limit) or more" in r.stderr, describe(r)
