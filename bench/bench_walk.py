#!/usr/bin/python3
"""Benchmark: walk a core with millions of chunks (not a test).

    /usr/bin/python3 bench/bench_walk.py [--chunks N] [--threads T] [--repeat R] [--no-cli]

Builds corpora/many.c, runs it with N chunks (default 5,500,000 over 4 threads/arenas; the
non-main arenas grow chains of 64 MiB heaps), snapshots it with gcore (cached under
build/bench-cache, keyed by the source hash and the parameters), then times in one run:

  * `cat CORE > /dev/null`, twice (the first may be cold-ish, the second is warm);
  * `heapwalk.open_core(CORE).arenas()` in this process (R times; min and median);
  * `python3 -m heapwalk arenas CORE --json` as a subprocess (R times; min and median).

Chunks walked = sum over arenas of in_use + fastbins + bins + top + tcache, plus mmapped
chunks, from the JSON.  Prints a table and one JSON line (prefixed "BENCH ").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "python"))

import hwkit  # noqa: E402  (build, spawn_ready, gcore, stop, source_key)

CACHE = Path(os.environ.get("HEAPWALK_BENCH_CACHE", str(REPO / "build" / "bench-cache")))


def make_core(chunks: int, threads: int) -> tuple[Path, dict, float]:
    binary = hwkit.build("many", CACHE)
    key = hwkit.source_key("many", str(chunks), str(threads))
    d = CACHE / "cores" / f"many-{chunks}-{threads}-{key}"
    core = d / "core"
    made_in = 0.0
    if not (d / "complete").exists():
        d.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        proc = hwkit.spawn_ready([str(binary), str(chunks)], [str(threads), str(d)], timeout=900)
        t1 = time.perf_counter()
        try:
            hwkit.gcore(proc.pid, core, timeout=1800)
        finally:
            hwkit.stop(proc)
        made_in = time.perf_counter() - t0
        print(f"made {core}: program {t1 - t0:.1f} s, gcore {time.perf_counter() - t1:.1f} s", file=sys.stderr)
        (d / "complete").write_text("ok\n")
    truth = json.loads((d / "truth.json").read_text())
    return core, truth, made_in


def time_cat(core: Path) -> float:
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as null:
        subprocess.run(["cat", str(core)], stdout=null, check=True)
    return time.perf_counter() - t0


def chunks_walked(doc: dict) -> int:
    n = doc["mmapped"]["count"]
    for a in doc["arenas"]:
        n += a["in_use"]["count"] + a["fastbins"]["count"] + a["bins"]["count"] + 1 + a["tcache"]["count"]
    return n


def time_inprocess(core: Path, repeat: int) -> tuple[list[float], dict]:
    import heapwalk

    times, doc = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        t = heapwalk.open_core(str(core))
        doc = t.arenas()
        times.append(time.perf_counter() - t0)
        close = getattr(t, "close", None)
        if close:
            close()
    return times, doc


def time_cli(core: Path, repeat: int) -> tuple[list[float], int]:
    times, rc = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-m", "heapwalk", "arenas", str(core), "--json"],
            cwd=str(REPO), env=hwkit.heapwalk_env(), stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )
        times.append(time.perf_counter() - t0)
        rc = r.returncode
        if r.returncode not in (0, 1):
            raise SystemExit(f"heapwalk CLI failed ({r.returncode}): {r.stderr.strip()}")
    return times, rc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunks", type=int, default=5_500_000, help="chunks to allocate (default 5.5 M)")
    ap.add_argument("--threads", type=int, default=4, help="threads/arenas (default 4)")
    ap.add_argument("--repeat", type=int, default=3, help="walks per method (default 3)")
    ap.add_argument("--no-cli", action="store_true", help="skip the CLI subprocess timing")
    args = ap.parse_args()

    core, truth, made_in = make_core(args.chunks, args.threads)
    size = core.stat().st_size
    cat_first = time_cat(core)
    cat_second = time_cat(core)
    walk_times, doc = time_inprocess(core, args.repeat)
    cli_times, cli_rc = ([], None) if args.no_cli else time_cli(core, args.repeat)

    n = chunks_walked(doc)
    walk_min, walk_med = min(walk_times), statistics.median(walk_times)
    diags = [d for d in doc.get("diagnostics", []) if d.get("kind") != "note"]
    heaps = sum(len(a["heaps"]) for a in doc["arenas"])
    rows = [
        ("core", str(core)),
        ("core size", f"{size / 2**20:,.1f} MiB ({size} bytes)"),
        ("program", f"{truth['allocated']:,} malloc'd, {truth['freed']:,} freed, {truth['nthreads']} threads"),
        ("arenas / heaps", f"{len(doc['arenas'])} / {heaps}"),
        ("chunks walked", f"{n:,}"),
        ("diagnostics (non-note)", str(len(diags))),
        ("cat core > /dev/null (1st)", f"{cat_first:.3f} s ({size / cat_first / 2**30:.2f} GiB/s)"),
        ("cat core > /dev/null (2nd)", f"{cat_second:.3f} s ({size / cat_second / 2**30:.2f} GiB/s)"),
        ("walk in-process (min)", f"{walk_min:.3f} s ({n / walk_min / 1e6:.2f} M chunks/s)"),
        ("walk in-process (median)", f"{walk_med:.3f} s ({n / walk_med / 1e6:.2f} M chunks/s)"),
    ]
    if cli_times:
        rows += [
            ("CLI arenas --json (min)", f"{min(cli_times):.3f} s (exit {cli_rc})"),
            ("CLI arenas --json (median)", f"{statistics.median(cli_times):.3f} s"),
        ]
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{w}}  {v}")
    print("BENCH " + json.dumps({
        "core_bytes": size,
        "chunks_walked": n,
        "arenas": len(doc["arenas"]),
        "heaps": heaps,
        "cat_seconds": [round(cat_first, 4), round(cat_second, 4)],
        "walk_seconds": [round(t, 4) for t in walk_times],
        "walk_chunks_per_second": round(n / walk_min),
        "cli_seconds": [round(t, 4) for t in cli_times],
        "diagnostics": len(diags),
        "core_made_seconds": round(made_in, 2),
    }, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
