"""`heapwalk trend DIR` (issue 13): the series of snapshots `heapwalk watch` keeps.

The snapshot directory is made here the way `watch` writes it (snap-NNNNNN.json = a `report
--json --pid` document plus a "watch" record; samples.jsonl; watch.json), from live reports of
corpora/grower.c, which grows by a known number of chunks of a known size per step and prints
its own counts (truth.json). Checked against those counts and /proc/PID/status:

- the series: one row per snapshot in seq order (gaps kept), RSS as sampled (VmRSS), glibc in use
  growing by what the program allocated; the fastest-growing chunk size is the program's, its
  count growth within 5 % of the program's; the fastest-growing class is the text it writes;
- text fits 80 columns; --jsonl lines parse and carry the keys; --html has one polyline per
  series; --json is the series document;
- a truncated last line of samples.jsonl and a garbage snapshot are skipped with a note; an
  empty directory is a one-line error (exit 1);
- a JVM (corpora/java/ConnGrowth.java, NMT summary) reported live at its two phases: NMT
  "Other" grows by what the program allocated, the connection's chunk sizes grow fastest.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hwkit import (CACHE, READY_TIMEOUT, REPO, build, describe, extract_json, heapwalk_env,
                   no_traceback, run_cli, run_gdb, stop)

SIZE = 1000  # grower's request: chunk size 1008
CHUNK = 1008
PER_STEP = 4000
THREADS = 2
SEQS = [1, 2, 4, 5]  # seq 3 "dropped by the ring" (and replaced by a garbage file below)
LIMIT = 256 << 20


def status_bytes(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile of /proc/PID/status, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(rest.split()[0]) * 1024
    return out


def sample(pid: int, usage_extra: int = 1 << 20) -> dict[str, Any]:
    """A `watch` sample of the process: RSS from /proc/PID/status, a made-up v1 cgroup whose
    usage is the RSS plus a page-cache share (the test's cgroup is not the contract here)."""
    st = status_bytes(pid)
    return {"time": time.time(), "pid": pid, "rss_bytes": st["VmRSS"],
            "rss_anon_bytes": st["RssAnon"], "rss_file_bytes": st["RssFile"],
            "cgroup": {"path": "/heapwalk-test", "version": 1,
                       "usage_bytes": st["VmRSS"] + usage_extra, "limit_bytes": LIMIT,
                       "high_bytes": None, "oom_kill": 0,
                       "pressure": {"some_avg10": 0.0, "full_avg10": 0.0}}}


def write_snapshot(d: Path, seq: int, report: dict, reason: str, smp: dict,
                   frozen: float) -> Path:
    """snap-NNNNNN.json as `watch` writes it: the report plus its "watch" record, atomically."""
    doc = dict(report)
    doc["watch"] = {"seq": seq, "time": smp["time"], "reason": reason, "sample": smp,
                    "frozen_seconds": frozen, "core": None}
    path = d / f"snap-{seq:06d}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.rename(path)
    return path


def report_pid(pid: int) -> dict:
    r = run_cli("report", "--pid", str(pid), "--json", timeout=300)
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    return json.loads(r.stdout)


@dataclass
class Run:
    dir: Path
    truths: list[dict]  # the program's truth.json at each snapshot (in SEQS order)
    rss: list[int]      # VmRSS sampled with each snapshot


class Grower:
    """corpora/grower.c stepped through stdin; one readiness byte per step."""

    def __init__(self, outdir: Path, size: int, per_step: int, threads: int) -> None:
        binary = build("grower", CACHE)
        r, w = os.pipe()
        self.outdir = outdir
        self.proc = subprocess.Popen([str(binary), str(outdir), str(w), str(size),
                                      str(per_step), "0", str(threads)],
                                     pass_fds=(w,), stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(w)
        self.ready = r
        self._wait()

    def _wait(self) -> None:
        got, _, _ = select.select([self.ready], [], [], READY_TIMEOUT)
        if not got or not os.read(self.ready, 1):
            self.proc.kill()
            raise RuntimeError("grower did not signal readiness: %s"
                               % self.proc.communicate(timeout=30)[1].decode(errors="replace"))

    def step(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"g")
        self.proc.stdin.flush()
        self._wait()

    def truth(self) -> dict:
        return json.loads((self.outdir / "truth.json").read_text())

    def close(self) -> None:
        os.close(self.ready)
        if self.proc.stdin:
            self.proc.stdin.close()
        stop(self.proc)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    base = tmp_path_factory.mktemp("trend")
    d = base / "watch"
    d.mkdir()
    g = Grower(base, SIZE, PER_STEP, THREADS)
    truths, rss = [], []
    samples = []
    try:
        pid = g.proc.pid
        (d / "watch.json").write_text(json.dumps({"target": {"pid": pid}, "start": time.time(),
                                                  "options": {"every": 1.0}}))
        for i, seq in enumerate(SEQS):
            if i:
                g.step()
                samples.append(sample(pid))
                if seq - SEQS[i - 1] > 1:  # the dropped snapshot's step
                    g.step()
                    samples.append(sample(pid))
            report = report_pid(pid)
            smp = sample(pid)
            samples.append(smp)
            truths.append(g.truth())
            rss.append(smp["rss_bytes"])
            reason = "first" if i == 0 else ("threshold 85%" if i == len(SEQS) - 1
                                              else "periodic")
            write_snapshot(d, seq, report, reason, smp,
                           report["target"].get("frozen_seconds") or 0.0)
    finally:
        g.close()
    lines = [json.dumps(s) for s in samples]
    # The watcher was killed mid-line: the last line is cut.
    (d / "samples.jsonl").write_text("\n".join(lines) + "\n" + lines[-1][:37])
    with open(d / "watch.json", "r+") as f:
        meta = json.load(f)
        meta["death"] = {"pid": meta["target"]["pid"], "time": time.time(), "signal": 9,
                         "signal_name": "SIGKILL", "core_dumped": False, "oom_kill_before": 0,
                         "oom_kill_after": 1, "oom_killed_cgroup": True, "oom_killed": True,
                         "kernel_log": None, "last_usage_bytes": LIMIT - 4096,
                         "limit_bytes": LIMIT}
        f.seek(0)
        f.write(json.dumps(meta))
        f.truncate()
    return Run(d, truths, rss)


def trend(*args: str) -> subprocess.CompletedProcess:
    r = run_cli("trend", *map(str, args))
    no_traceback(r)
    return r


def trend_json(*args: str) -> dict:
    r = trend(*args, "--json")
    assert r.returncode == 0, describe(r)
    return json.loads(r.stdout)


def test_series_against_the_program(run: Run) -> None:
    doc = trend_json(run.dir)
    assert doc["schema"] == "heapwalk/1" and doc["command"] == "trend"
    pts = doc["snapshots"]
    assert [p["seq"] for p in pts] == SEQS and doc["seq_gaps"] == 1
    assert [p["reason"] for p in pts] == ["first", "periodic", "periodic", "threshold 85%"]
    assert pts[0]["elapsed_seconds"] == 0 and all(
        a["time"] < b["time"] for a, b in zip(pts, pts[1:]))
    # RSS as sampled with each snapshot (VmRSS), and the cgroup figures.
    assert [p["rss_bytes"] for p in pts] == run.rss
    for p in pts:
        assert p["rss_source"] == "sample"
        assert p["cgroup"]["limit_bytes"] == LIMIT
        assert p["cgroup_usage_percent"] == pytest.approx(
            100.0 * p["cgroup"]["usage_bytes"] / LIMIT, abs=0.01)
        # The report's own resident total agrees with VmRSS (same process, moments apart).
        assert p["resident_bytes"] == pytest.approx(p["rss_bytes"], rel=0.1)
    # glibc in use grows by what the program kept (its blocks of SIZE and of 200 bytes).
    t0, t1 = run.truths[0], run.truths[-1]
    grown = (t1["bytes"] - t0["bytes"]) + (t1["side_count"] - t0["side_count"]) * t1[
        "side_chunk_size"]
    in_use = [p["glibc"]["in_use_bytes"] for p in pts]
    assert in_use[-1] - in_use[0] == pytest.approx(grown, rel=0.05)
    assert in_use == sorted(in_use)
    assert pts[-1]["glibc"]["arenas"] == THREADS and len(pts[-1]["arenas"]) == THREADS
    assert pts[0]["nmt"] is None and pts[0]["untracked_bytes"] is None
    # Fastest growing: the program's chunk size, its count within 5 % of the program's own.
    sizes = doc["growth"]["sizes"]
    top = sizes[0]
    assert top["size"] == t1["chunk_size"] == CHUNK, sizes[:3]
    assert top["count"] == pytest.approx(t1["count"] - t0["count"], rel=0.05)
    assert top["last_count"] == pytest.approx(t1["count"], rel=0.05)
    assert top["bytes"] == top["count"] * CHUNK
    counts = [t["count"] for t in run.truths]
    for got, want in zip(top["counts"], counts):
        assert got == pytest.approx(want, rel=0.05, abs=5)
    hours = (pts[-1]["time"] - pts[0]["time"]) / 3600
    assert doc["growth"]["hours"] == pytest.approx(hours, rel=1e-3)
    assert top["bytes_per_hour"] == pytest.approx(top["bytes"] / hours, rel=1e-3)
    assert sizes[1]["size"] == t1["side_chunk_size"]
    assert sizes[1]["count"] == pytest.approx(t1["side_count"] - t0["side_count"], rel=0.05)
    # The noise (48- and 3008-byte chunks) does not grow.
    assert all(s["size"] not in (48, 3008) for s in sizes)
    classes = doc["growth"]["classes"]
    assert classes[0]["name"] == "text"
    assert classes[0]["count"] == pytest.approx(t1["count"] - t0["count"], rel=0.05)
    # The samples, the death record.
    assert doc["samples_summary"]["count"] == len(doc["samples"]) >= len(SEQS)
    assert doc["death"]["signal"] == 9 and doc["death"]["oom_kill_after"] == 1


def test_notes_truncated_samples_line(run: Run) -> None:
    doc = trend_json(run.dir)
    notes = [d["detail"] for d in doc["diagnostics"]]
    assert any("samples.jsonl: skipped 1 line" in n for n in notes), notes


def test_text_fits_80_columns(run: Run) -> None:
    r = trend(run.dir)
    assert r.returncode == 0, describe(r)
    lines = r.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), "\n".join(
        line for line in lines if len(line) > 80)
    out = r.stdout
    assert "fastest growing chunk sizes" in out and "fastest growing content classes" in out
    row = next(line for line in lines if line.strip().startswith(str(CHUNK) + " "))
    assert "+%d" % (run.truths[-1]["count"] - run.truths[0]["count"]) in row \
        or "+" in row, row
    assert "target died: killed by SIGKILL (the OOM killer: oom_kill 0 -> 1)\n  at " in out
    assert "last usage 256.0 MiB of the 256.0 MiB limit (100.0 %)" in out
    assert "freeze per snapshot: " in out
    assert ">85%" in out
    print(out)


def test_jsonl_lines_parse_and_have_the_keys(run: Run) -> None:
    r = trend(run.dir, "--jsonl")
    assert r.returncode == 0, describe(r)
    lines = r.stdout.splitlines()
    assert len(lines) == len(SEQS)
    rows = [json.loads(line) for line in lines]
    keys = {"time", "seq", "rss_bytes", "cgroup_usage_bytes", "cgroup_limit_bytes",
            "glibc_in_use_bytes", "glibc_free_bytes", "glibc_trimmable_bytes",
            "untracked_bytes", "nmt_committed_bytes", "glibc_arenas", "arenas"}
    for row in rows:
        assert keys <= set(row), keys - set(row)
        assert set(row) == set(rows[0])  # one schema for read_json_auto
    assert [row["seq"] for row in rows] == SEQS
    assert [row["rss_bytes"] for row in rows] == run.rss
    assert rows[-1]["cgroup_limit_bytes"] == LIMIT
    assert rows[-1]["glibc_arenas"] == len(rows[-1]["arenas"]) == THREADS
    # The notes go to stderr: stdout is only JSON Lines.
    assert "samples.jsonl" in r.stderr


def test_html_has_one_polyline_per_series(run: Run, tmp_path: Path) -> None:
    page = tmp_path / "trend.html"
    r = trend(run.dir, "--html", page)
    assert r.returncode == 0, describe(r)
    text = page.read_text()
    assert "<svg" in text and 'id="chart-memory"' in text
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    memory = text.split('id="chart-memory"', 1)[1].split("</svg>", 1)[0]
    series = re.findall(r'<polyline class="series[^"]*" data-series="([^"]+)"', memory)
    assert series == ["rss", "cgroup_usage", "cgroup_limit", "glibc_in_use", "glibc_free"]
    # The RSS line has every sample and snapshot (distinct times).
    rss = re.search(r'data-series="rss" stroke="[^"]*" points="([^"]*)"', memory).group(1)
    assert len(rss.split()) >= len(SEQS)
    assert 'id="chart-nmt"' not in text  # no JVM


def test_html_renders_in_chromium(run: Run, tmp_path: Path) -> None:
    from test_html_report import read_png, render_page, svg  # noqa: PLC0415
    page = tmp_path / "trend.html"
    r = trend(run.dir, "--html", page)
    assert r.returncode == 0, describe(r)
    dom, png = render_page(page, tmp_path)
    assert 'data-rendered="1"' in dom, "the page's script did not run"
    chart = svg(dom, "chart-memory")
    assert len(re.findall(r"<polyline ", chart)) == 5
    assert "seq 5: threshold 85%" in chart  # the snapshot ticks
    width, height, rows = read_png(png)
    colours = {row[x:x + 3] for row in rows[::5] for x in range(0, len(row) - 3, 3 * 4)}
    assert len(colours) > 20, "screenshot looks blank"


def test_gdb_runs_trend_without_an_inferior(run: Run) -> None:
    g = run_gdb(commands=["heapwalk trend --json %s" % run.dir])
    no_traceback(g)
    doc = extract_json(g.stdout)
    assert [p["seq"] for p in doc["snapshots"]] == SEQS
    assert doc["growth"]["sizes"][0]["size"] == CHUNK


def test_html_write_error_is_one_line(run: Run, tmp_path: Path) -> None:
    r = trend(run.dir, "--html", tmp_path / "no" / "dir" / "x.html")
    assert r.returncode == 1, describe(r)
    assert r.stderr.startswith("heapwalk: ") and len(r.stderr.splitlines()) <= 2, r.stderr


def test_garbage_snapshot_is_skipped_with_a_note(run: Run, tmp_path: Path) -> None:
    d = tmp_path / "w"
    d.mkdir()
    for f in run.dir.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    (d / "snap-000003.json").write_bytes(b"\x00\x01garbage{")
    (d / "snap-000006.json").write_text('{"schema": "heapwalk/1", "command": "diff"}')
    r = trend(d)
    assert r.returncode == 0, describe(r)
    assert "note: snap-000003.json: skipped: not JSON" in r.stdout
    assert "note: snap-000006.json: skipped: not a 'report --json' document" in r.stdout
    doc = trend_json(d)
    assert [p["seq"] for p in doc["snapshots"]] == SEQS


def test_list_of_files(run: Run) -> None:
    files = sorted(run.dir.glob("snap-*.json"))
    doc = trend_json(*files)
    assert [p["seq"] for p in doc["snapshots"]] == SEQS
    assert doc["growth"]["sizes"][0]["size"] == CHUNK


def test_errors_are_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, what in (((empty,), "no snapshots"), ((tmp_path / "nope",), "no such file")):
        r = trend(*args)
        assert r.returncode == 1, describe(r)
        assert r.stdout == ""
        first = r.stderr.splitlines()[0]
        assert first.startswith("heapwalk: ") and what in first, r.stderr
        assert len(r.stderr.splitlines()) <= 2
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "snap-000001.json").write_text("{")
    r = trend(bad)
    assert r.returncode == 1 and "no snapshot could be read" in r.stderr, describe(r)
    r = trend(empty, "--json", "--jsonl")
    assert r.returncode == 2, describe(r)


# -- a JVM -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def jvm_run(tmp_path_factory):
    import nmtkit  # noqa: PLC0415
    if not nmtkit.have_jdk():
        pytest.skip("no JDK")
    import seedkit  # noqa: PLC0415
    base = tmp_path_factory.mktemp("trend-jvm")
    d = base / "watch"
    d.mkdir()
    cp = seedkit.build(CACHE)
    fifo = base / "ready.fifo"
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    keep = os.open(fifo, os.O_WRONLY)
    proc = subprocess.Popen([str(nmtkit.JAVA), *seedkit.FLAGS, "-cp", str(cp), "ConnGrowth",
                             str(base), str(fifo), *seedkit.ARGS],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    truths = []
    try:
        for phase in (1, 2):
            if phase == 2:
                assert proc.stdin is not None
                proc.stdin.write(b"go\n")
                proc.stdin.flush()
            seedkit._wait(rfd, proc, phase)  # pylint: disable=protected-access
            report = report_pid(proc.pid)
            smp = sample(proc.pid)
            write_snapshot(d, phase, report, "first" if phase == 1 else "periodic", smp,
                           report["target"].get("frozen_seconds") or 0.0)
            truths.append(json.loads((base / f"truth-{phase}.json").read_text()))
    finally:
        os.close(rfd)
        os.close(keep)
        stop(proc)
        if proc.stdin:
            proc.stdin.close()
    return d, truths


def test_jvm_series_names_nmt_growth(jvm_run) -> None:
    d, (t1, t2) = jvm_run
    doc = trend_json(d)
    pts = doc["snapshots"]
    assert all(p["nmt"] is not None for p in pts)
    grown = t2["connections"] - t1["connections"]
    per_conn = t1["buffer"] + t1["session"]
    other = [{c["name"]: c for c in p["nmt"]["categories"]}["Other"] for p in pts]
    # what the program allocated, plus the JDK's own few bytes in Other (17.0.15: 8; 17.0.21: 0)
    assert 0 <= other[1]["malloc"] - other[0]["malloc"] - grown * per_conn < 256
    assert doc["nmt_categories"][0] == "Other"
    assert all(p["untracked_bytes"] > 64 << 20 for p in pts)  # the leaked Inflaters
    g = doc["growth"]["sizes"]
    assert g[0]["count"] == pytest.approx(grown, rel=0.05), g[:3]
    assert g[1]["count"] == pytest.approx(grown, rel=0.05), g[:3]
    r = trend(d)
    assert r.returncode == 0, describe(r)
    assert all(len(line) <= 80 for line in r.stdout.splitlines()), r.stdout
    assert "NMT committed" in r.stdout and "Other" in r.stdout
    rows = [json.loads(line) for line in trend(d, "--jsonl").stdout.splitlines()]
    assert 0 <= rows[1]["nmt_other_committed_bytes"] - rows[0]["nmt_other_committed_bytes"] \
        - grown * per_conn < 256
    page = d.parent / "t.html"
    assert trend(d, "--html", page).returncode == 0
    text = page.read_text()
    assert 'id="chart-nmt"' in text and 'data-series="nmt_committed"' in text \
        and 'data-series="untracked"' in text
    print(r.stdout)


# -- the real watcher --------------------------------------------------------------------------

def test_trend_of_a_real_watch_until_the_oom_kill(tmp_path: Path) -> None:
    """grower (timed mode) in a v1 memory cgroup the test limits, `heapwalk watch --cgroup`
    outside it until the kernel's OOM killer ends it, then `trend` over what watch kept."""
    from test_watch import LimitedGroup, _count_at, _progress  # noqa: PLC0415
    binary = build("grower", CACHE)
    group = LimitedGroup("trend", 96 << 20)
    try:
        data = tmp_path / "data"
        data.mkdir()
        r, w = os.pipe()
        oom_before = group.oom_kills()
        # 2 threads, 200 blocks of 1000 bytes every 50 ms: about 4 MB/s, killed in ~25 s.
        proc = group.spawn([str(binary), str(data), str(w), str(SIZE), "200", "50", "2"],
                           pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(w)
        assert os.read(r, 1) == b"r"
        os.close(r)
        out = tmp_path / "watch"
        watcher = subprocess.Popen(
            [sys.executable, "-m", "heapwalk", "watch", "--cgroup", str(group.dir), "-o",
             str(out), "--sample", "0.2", "--every", "4", "--at", "50", "85", "--keep", "8"],
            cwd=str(REPO), env=heapwalk_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        assert proc.wait(timeout=180) == -9
        watcher.communicate(timeout=120)
        assert watcher.returncode == 0 and group.oom_kills() > oom_before
    finally:
        group.close()
    doc = trend_json(out)
    pts = doc["snapshots"]
    assert len(pts) >= 3 and [p["seq"] for p in pts] == sorted(p["seq"] for p in pts)
    # Near the limit at the end (watch's own test holds it to its 85 % threshold; here the
    # series only has to reach the top of the limit).
    assert pts[-1]["cgroup_usage_percent"] >= 70, [p["cgroup_usage_percent"] for p in pts]
    assert all(p["cgroup"]["limit_bytes"] == 96 << 20 and p["frozen_seconds"] > 0 for p in pts)
    assert doc["death"]["signal"] == 9 and doc["death"]["oom_killed"]
    steps = _progress(data / "steps.jsonl")
    # The growing size, counted as the program counted it when each snapshot froze it.
    first, last = pts[0], pts[-1]
    t0 = first["time"] - (first["snapshot_seconds"] or 0)
    t1 = last["time"] - (last["snapshot_seconds"] or 0)
    want = _count_at(steps, t1, "count") - _count_at(steps, t0, "count")
    top = doc["growth"]["sizes"][0]
    assert top["size"] == CHUNK, doc["growth"]["sizes"][:3]
    assert top["count"] == pytest.approx(want, rel=0.05)
    assert doc["growth"]["classes"][0]["name"] == "text"
    assert doc["growth"]["classes"][0]["count"] == pytest.approx(want, rel=0.05)
    # ... and what it had allocated up to its last report (the kill came soon after).
    assert top["last_count"] >= 0.8 * steps[-1]["count"]
    text = trend(out)
    assert text.returncode == 0, describe(text)
    assert all(len(line) <= 80 for line in text.stdout.splitlines()), text.stdout
    assert "target died: killed by SIGKILL (the OOM killer: oom_kill" in text.stdout
    rows = [json.loads(line) for line in trend(out, "--jsonl").stdout.splitlines()]
    assert [row["seq"] for row in rows] == [p["seq"] for p in pts]
    print(text.stdout)
