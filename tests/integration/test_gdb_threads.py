"""Threads as gdb numbers them (issue 15): in gdb ``heapwalk tcache N`` takes gdb's thread number
(``$_thread`` too), ``--lwp N`` an LWP, no argument the selected thread (as pwndbg's tcachebins),
``--all`` every thread; thread numbers, LWPs and arena indices complete.

Oracles: gdb's own ``info threads`` for its numbering, the corpus program's per-thread tcache
count and bytes (truth.json) for what each thread's tcache holds."""

from __future__ import annotations

import json
import re

from hwkit import describe, no_traceback, run_gdb


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^==([a-z0-9-]+)==$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _gdb_numbers(info_threads: str) -> dict[int, int]:
    """gdb thread number -> LWP, from ``info threads``."""
    return {int(m.group(1)): int(m.group(2))
            for m in re.finditer(r"^\*?\s+(\d+)\s+(?:Thread \S+ \()?LWP (\d+)", info_threads, re.M)}


def _run(c, commands: list[str]) -> dict[str, str]:
    argv = []
    for i, cmd in enumerate(commands):
        argv += ["echo ==%d==\\n" % i, cmd]
    argv.append("echo ==end==\\n")
    r = run_gdb(c.binary, c.core, commands=["info threads"] + argv)
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    parts = _sections(r.stdout)
    parts["info"] = r.stdout.split("==0==")[0]
    parts["stderr"] = r.stderr
    return parts


def _lwps(doc_text: str) -> list[int]:
    return [t["lwp"] for t in json.loads(doc_text)["threads"]]


def test_tcache_takes_gdb_thread_numbers_and_defaults_to_the_selected_thread(corpora):
    c = corpora.core("arenas", "4", "0")
    truth = {t["lwp"]: t["tcache"] for t in c.truth["threads"]}
    p = _run(c, ["heapwalk tcache --json", "thread 3", "heapwalk tcache --json",
                 "heapwalk tcache 2 --json", "heapwalk tcache $_thread --json",
                 "heapwalk tcache --all --json",
                 "heapwalk tcache --lwp %d --json" % c.truth["threads"][1]["lwp"],
                 "heapwalk tcache", "heapwalk tcache 9", "print $heapwalk_status"])
    numbers = _gdb_numbers(p["info"])
    assert sorted(numbers) == [1, 2, 3, 4] and set(numbers.values()) == set(truth), p["info"]
    assert _lwps(p["0"]) == [numbers[1]]  # the selected thread: 1 when gdb opens a core
    assert _lwps(p["2"]) == [numbers[3]]  # after `thread 3`
    assert _lwps(p["3"]) == [numbers[2]]  # gdb's thread 2, not LWP 2
    assert _lwps(p["4"]) == [numbers[3]]  # $_thread is the selected thread's number
    assert sorted(_lwps(p["5"])) == sorted(truth)
    assert _lwps(p["6"]) == [c.truth["threads"][1]["lwp"]]
    for t in json.loads(p["5"])["threads"]:
        assert (t["count"], t["bytes"]) == (truth[t["lwp"]]["count"], truth[t["lwp"]]["bytes"])
    text = p["7"].strip().splitlines()
    assert text[0].startswith("thread %d: tcache " % numbers[3]), p["7"]
    assert sum(line.startswith("thread ") for line in text) == 1
    assert "heapwalk: no thread 9" in p["stderr"] and "info threads" in p["stderr"], p["stderr"]
    assert p["9"].strip().endswith("= 2"), p["9"]


def test_thread_numbers_lwps_and_arena_indices_complete(corpora):
    c = corpora.core("arenas", "4", "0")
    p = _run(c, ["complete heapwalk tcache ", "complete heapwalk tcache --lwp ",
                 "complete heapwalk bins ", "complete heapwalk chunks --arena ",
                 "complete heapwalk tcache --l"])
    numbers = _gdb_numbers(p["info"])
    words = {k: [line.split()[-1] for line in v.strip().splitlines()] for k, v in p.items()
             if k.isdigit()}
    assert p["stderr"].count("Traceback") == 0
    assert [w for w in words["0"] if w.isdigit()] == [str(n) for n in sorted(numbers)]
    assert "--all" in words["0"] and "--lwp" in words["0"]
    assert words["1"] == [str(lwp) for _, lwp in sorted(numbers.items())]
    arenas = [str(i) for i in range(len(c.truth["threads"]))]  # one arena per thread here
    assert [w for w in words["2"] if w.isdigit()] == arenas
    assert words["3"] == arenas
    assert words["4"] == ["--lwp"]
