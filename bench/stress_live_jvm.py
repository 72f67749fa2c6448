"""Stress run on live JVMs (issue 11's acceptance): `bench/stress_live_jvm.py [--runs 20]`.

For a JDK 17 JVM started with -XX:NativeMemoryTracking=summary and one with =detail (the
NmtLoad program of the test suite: Inflaters, Deflaters, direct buffers, threads, classes):

- `classify`, `nmt`, `report`, `report --html` with --pid from the CLI, RUNS times each;
- the same four commands from gdb attached to the JVM (`gdb -p PID`), RUNS gdb sessions;
- a gcore of the JVM before the CLI runs, between them and the gdb runs, and after: each run's
  classes (NMT categories and zlib groups) must equal those of the gcore before or after its
  phase (an idle JVM still changes a little: its monitor deflation thread frees an
  ObjectMonitor now and then, "NMT Object Monitors" 3 -> 2).

A run fails on a crash (signal, traceback, gdb internal-error, sanitizer report), an exit status
other than 0 or 1, or classes that differ. Prints a table and one JSON line (STRESS {...}).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))

# pylint: disable=wrong-import-position
from hwkit import extract_json, gcore, run_cli, run_gdb, stop  # noqa: E402
from nmtkit import LOAD, spawn_jvm  # noqa: E402

CRASH_MARKS = ("internal-error", "Fatal signal", "Segmentation fault", "out of memory",
               "virtual memory exhausted", "AddressSanitizer", "runtime error:", "Traceback")
COMMANDS = (["classify"], ["nmt"], ["report"], ["report", "--html", "{html}"])


def classes(doc: dict) -> dict[str, int]:
    return {c["name"]: c["count"] for c in doc["classes"] if c["kind"] in ("nmt", "zlib")}


def crashed(rc: int, out: str, err: str) -> str:
    if rc not in (0, 1):
        return f"exit {rc}"
    for mark in CRASH_MARKS:
        if mark in out or mark in err:
            return mark
    return ""


def one_level(level: str, runs: int, work: Path) -> dict:
    d = work / level
    d.mkdir()
    proc = spawn_jvm(level, d, LOAD)
    html = d / "r.html"
    res: dict = {"level": level, "cli": {}, "gdb": {"runs": 0, "failures": []}, "classes_differ": 0}
    seen: list[tuple[str, dict[str, int]]] = []

    def truth() -> dict[str, int]:
        core = gcore(proc.pid, d / "jvm.core")
        try:
            return classes(json.loads(run_cli("classify", "--json", str(core), timeout=300).stdout))
        finally:
            core.unlink()

    try:
        cores = [truth()]
        for args in COMMANDS:
            name = " ".join(a for a in args if not a.startswith("{"))
            row = res["cli"].setdefault(name, {"runs": 0, "failures": [], "seconds": []})
            for _ in range(runs):
                argv = [a.format(html=html) for a in args]
                if args == ["classify"]:
                    argv.append("--json")
                t0 = time.monotonic()
                r = run_cli(*argv, "--pid", str(proc.pid), timeout=300)
                row["seconds"].append(time.monotonic() - t0)
                row["runs"] += 1
                why = crashed(r.returncode, r.stdout, r.stderr)
                if why:
                    row["failures"].append(why)
                elif args == ["classify"]:
                    seen.append((f"CLI run {row['runs']}", classes(json.loads(r.stdout))))
        cores.append(truth())
        cli_seen = len(seen)
        for _ in range(runs):
            g = run_gdb("-p", str(proc.pid),
                        commands=["heapwalk classify --json", "heapwalk nmt", "heapwalk report",
                                  f"heapwalk report --html {html}", "echo heapwalk-done\\n"],
                        timeout=600)
            res["gdb"]["runs"] += 1
            why = crashed(0 if "heapwalk-done" in g.stdout else g.returncode, g.stdout, g.stderr)
            if not why and "heapwalk-done" not in g.stdout:
                why = "gdb did not finish"
            if not why:
                try:
                    seen.append((f"gdb run {res['gdb']['runs']}", classes(extract_json(g.stdout))))
                except AssertionError:
                    why = "no classify JSON; stderr: " + g.stderr[-600:]
            if why:
                res["gdb"]["failures"].append(why)
        cores.append(truth())
        # each run against the gcores before and after its phase
        res["classes_differ"] = 0
        res["differences"] = []
        for i, (run, got) in enumerate(seen):
            near = cores[0:2] if i < cli_seen else cores[1:3]
            if got not in near:
                res["classes_differ"] += 1
                res["differences"] += [(run, k, got.get(k), near[0].get(k), near[1].get(k))
                                       for k in sorted(set(got) | set(near[0])) if got.get(k) != near[0].get(k)]
        res["differences"] = res["differences"][:40]
        res["classes_compared"] = len(seen)
        res["gcores_changed"] = [k for k in sorted(set(cores[0]) | set(cores[2]))
                                 if len({c.get(k) for c in cores}) > 1]
    finally:
        stop(proc)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--levels", default="summary,detail")
    args = ap.parse_args()
    out = []
    with tempfile.TemporaryDirectory(prefix="heapwalk-stress-") as tmp:
        for level in args.levels.split(","):
            print(f"NMT {level}: {args.runs} runs of each command, CLI and gdb ...", file=sys.stderr)
            out.append(one_level(level, args.runs, Path(tmp)))
    bad = 0
    print(f"{'NMT':8} {'where':5} {'command':18} {'runs':>5} {'failed':>6} {'median s':>9}")
    for r in out:
        for name, row in r["cli"].items():
            secs = sorted(row["seconds"])
            bad += len(row["failures"])
            print(f"{r['level']:8} {'CLI':5} {name:18} {row['runs']:5} {len(row['failures']):6} "
                  f"{secs[len(secs) // 2]:9.2f}")
        bad += len(r["gdb"]["failures"]) + r["classes_differ"]
        print(f"{r['level']:8} {'gdb':5} {'all four, 1 attach':18} {r['gdb']['runs']:5} "
              f"{len(r['gdb']['failures']):6} {'':>9}")
        print(f"{r['level']:8} classes equal to a gcore's (before or after the phase) in "
              f"{r['classes_compared'] - r['classes_differ']} of {r['classes_compared']} runs; "
              f"changed in the JVM meanwhile: {', '.join(r['gcores_changed']) or 'nothing'}")
    print("STRESS " + json.dumps(out))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
