"""`heapwalk nmt` on JVM cores and live JVMs, against `jcmd VM.native_memory summary scale=1`.

The oracle is the summary jcmd printed just before the snapshot (nmtkit.oracle).  Every figure
must be equal except the ones jcmd's own attach operation moves (JCMD_INTERNAL_*, below).
"""

from __future__ import annotations

import json
import re

import pytest

from hwkit import CACHE, describe, extract_json, import_heapwalk, no_traceback, run_cli, run_gdb
from nmtkit import JAVA, JcmdCommitted, JvmCorpora, have_jdk, parse_jcmd, parse_jcmd_vm_map

pytestmark = pytest.mark.skipif(not have_jdk(), reason="needs openjdk-17-jdk-headless")

# jcmd's report runs inside the JVM while the attach operation that carries it (a
# LinuxAttachOperation, mtInternal) and its output buffer (bufferedStream, mtInternal) are
# allocated; both are freed once the reply is written, i.e. before (or, racing, just after) the
# snapshot.  So "Internal" in the image may hold up to this many blocks / bytes fewer than jcmd
# printed, and Total's malloc count and the NMT tracking overhead (16 bytes per block) follow.
# Nothing else may differ.
JCMD_INTERNAL_MAX_COUNT = 4
JCMD_INTERNAL_MAX_BYTES = 16384
HEADER = 16  # sizeof(MallocHeader): the per-block tracking overhead jcmd reports
# The committed parts of a thread stack are not tracked as the stack grows: each report
# (VirtualMemorySummary::snapshot -> snapshot_thread_stacks) probes every Thread Stack region with
# mincore and records what is resident as committed parts with an empty call stack.  The image
# holds the probe of the *second* jcmd (the summary, after the detail one), so the stacks of the
# threads that ran in between -- the Attach Listener, which executed both operations -- may show
# other stack-less committed parts than the detail jcmd printed.  Nothing else may differ.
JCMD_STACK_PROBE_MAX_REGIONS = 2


@pytest.fixture(scope="module")
def jvms(tmp_path_factory):
    c = JvmCorpora(CACHE, tmp_path_factory.mktemp("jvm"))
    yield c
    c.close()


def nmt_doc(core: str, detail: bool = False) -> dict:
    hw = import_heapwalk()
    with hw.open_core(core) as t:
        return t.nmt(detail)


def compare_with_jcmd(doc: dict, jcmd_text: str, max_count: int = JCMD_INTERNAL_MAX_COUNT,
                      max_bytes: int = JCMD_INTERNAL_MAX_BYTES) -> list[str]:
    """Mismatches between heapwalk's nmt document and jcmd's summary (residuals explained; the
    bounds of the "Internal" residual are JDK 17's unless given)."""
    j = parse_jcmd(jcmd_text)
    n = doc["nmt"]
    bad: list[str] = []

    def eq(what, expected, got):
        if expected != got:
            bad.append(f"{what}: jcmd {expected!r}, heapwalk {got!r}")

    ours = {c["name"]: c for c in n["categories"]}
    eq("category names", list(j.categories), list(ours))
    # The residual of "Internal" (jcmd's attach operation), measured and bounded.
    dcount = dbytes = 0
    if "Internal" in j.categories and "Internal" in ours:
        dcount = j.categories["Internal"].malloc[1] - ours["Internal"]["malloc"]["count"]
        dbytes = j.categories["Internal"].malloc[0] - ours["Internal"]["malloc"]["bytes"]
        if not (0 <= dcount <= max_count and 0 <= dbytes <= max_bytes):
            bad.append(f"Internal malloc residual out of bounds: {dbytes} bytes in {dcount} blocks")
    for name, jc in j.categories.items():
        o = ours.get(name)
        if o is None:
            continue
        d_b = dbytes if name == "Internal" else 0
        d_overhead = HEADER * dcount if name == "Native Memory Tracking" else 0
        eq(f"{name}.reserved", jc.reserved, o["reserved"] + d_b + d_overhead)
        eq(f"{name}.committed", jc.committed, o["committed"] + d_b + d_overhead)
        mc = dcount if name == "Internal" else 0
        eq(f"{name}.malloc", jc.malloc, (o["malloc"]["bytes"] + d_b, o["malloc"]["count"] + mc)
           if o["malloc"]["bytes"] else (0, 0))
        eq(f"{name}.arena", jc.arena, (o["arena"]["bytes"], o["arena"]["count"]) if o["arena"]["bytes"] else (0, 0))
        eq(f"{name}.mmap", jc.mmap, (o["mmap"]["reserved"], o["mmap"]["committed"]) if o["mmap"]["reserved"] else (0, 0))
        if jc.stack is not None:
            eq(f"{name}.stack", jc.stack, (o["stack"]["reserved"], o["stack"]["committed"]))
            eq(f"{name}.threads", jc.threads, o.get("threads"))
        if jc.tracking_overhead is not None:
            eq(f"{name}.tracking_overhead", jc.tracking_overhead, o["tracking_overhead"] + d_overhead)
    t = n["total"]
    extra = dbytes + HEADER * dcount
    eq("total", j.total, (t["reserved"] + extra, t["committed"] + extra))
    if j.total_malloc is not None:
        eq("total malloc", j.total_malloc, (t["malloc"]["bytes"] + extra, t["malloc"]["count"] + dcount))
    if j.total_mmap is not None:
        eq("total mmap", j.total_mmap, (t["mmap"]["reserved"], t["mmap"]["committed"]))
    return bad


def check_headers_equal_tables(n: dict) -> None:
    """Header reconstruction == NMT's own (raw, unadjusted) malloc counters, per category."""
    headers = {h["name"]: (h["bytes"], h["count"]) for h in n["headers"]["categories"]}
    raw = {c["name"]: (c["malloc"]["bytes"], c["malloc"]["count"]) for c in n["raw"] if c["malloc"]["count"]}
    assert headers == raw
    assert sum(c for _, c in headers.values()) == n["all_mallocs"]["count"]
    assert sum(b for b, _ in headers.values()) == n["all_mallocs"]["bytes"]


@pytest.mark.parametrize("level", ["summary", "detail"])
def test_core_matches_jcmd(jvms, level):
    c = jvms.core(level)
    doc = nmt_doc(str(c.core))
    n = doc["nmt"]
    assert n["level"] == level
    assert n["source"] == "symtab"
    assert n["jdk"] and n["jdk"].startswith("17.")
    bad = compare_with_jcmd(doc, c.jcmd)
    assert not bad, "\n".join(bad)
    assert not [d for d in doc["diagnostics"] if d["kind"] != "note"], doc["diagnostics"]


@pytest.mark.parametrize("level", ["summary", "detail"])
def test_headers_equal_nmt_tables(jvms, level):
    n = nmt_doc(str(jvms.core(level).core))["nmt"]
    check_headers_equal_tables(n)
    # glibc's in-use bytes split exactly into chunks with and without an NMT header.
    g = n["glibc"]
    assert n["headers"]["chunks"]["bytes"] + n["untracked_malloc"]["bytes"] == g["in_use"] + g["mmapped"]


def test_headers_without_jvm_symbols(jvms):
    """No file from disk at all (--no-symbols): the per-category malloc totals come from the
    headers alone and equal NMT's tables read with symbols."""
    c = jvms.core("summary")
    with_syms = nmt_doc(str(c.core))["nmt"]
    r = run_cli("nmt", c.core, "--no-symbols", "--json")
    no_traceback(r)
    doc = json.loads(r.stdout) if r.stdout.strip() else None
    assert doc is not None, describe(r)
    n = doc["nmt"]
    assert n["source"] == "headers", n["layout"]
    assert any("reconstructing from malloc headers" in d["detail"] for d in doc["diagnostics"])
    ours = {x["name"]: (x["malloc"]["bytes"], x["malloc"]["count"]) for x in n["categories"]}
    raw = {x["name"]: (x["malloc"]["bytes"], x["malloc"]["count"]) for x in with_syms["raw"] if x["malloc"]["count"]}
    assert ours == raw


def test_nmt_off(jvms):
    c = jvms.core("off")
    n = nmt_doc(str(c.core))["nmt"]
    assert n["level"] == "off"
    assert n["categories"] == []
    assert n["headers"]["categories"] == []  # no block carries a header
    assert n["untracked_malloc"]["count"] > 0 and n["glibc"]["in_use"] > 0
    assert n["untracked_malloc"]["bytes"] == n["glibc"]["in_use"] + n["glibc"]["mmapped"]
    r = run_cli("nmt", c.core)
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    assert "Native Memory Tracking is off" in r.stdout
    assert "Untracked malloc" in r.stdout


# zlib 1.2.x (zconf.h "memory footprint"): inflate needs (1 << windowBits) = 32 KiB for the
# window plus ~7 KiB of state; deflate needs (1 << (windowBits+2)) + (1 << (memLevel+9)) =
# 256 KiB with the defaults, in four 64 KiB buffers (window, prev, head, pending_buf) plus its
# ~6 KiB state.  Java adds one z_stream (112 bytes) per stream.  glibc chunk sizes of those
# requests: malloc(n) -> (n + 8 + 15) & ~15.
def chunk(n: int) -> int:
    return max(32, (n + 8 + 15) & ~15)


@pytest.mark.parametrize("level", ["off", "summary"])
def test_untracked_covers_zlib(jvms, level):
    c = jvms.core(level)
    n = nmt_doc(str(c.core))["nmt"]
    inflaters, deflaters = c.truth["inflaters"], c.truth["deflaters"]
    sizes = {s["size"]: s["count"] for s in n["headers"]["untracked_sizes"]}
    assert sizes.get(chunk(32 * 1024), 0) >= inflaters, "an inflate window per leaked Inflater"
    assert sizes.get(chunk(64 * 1024), 0) >= 4 * deflaters, "four 64 KiB buffers per leaked Deflater"
    assert sizes.get(chunk(112), 0) >= inflaters + deflaters, "a z_stream per stream"
    low = inflaters * (32 * 1024 + 7 * 1024) + deflaters * 256 * 1024
    assert n["untracked_malloc"]["bytes"] >= low
    assert n["untracked_malloc"]["count"] >= 3 * inflaters + 6 * deflaters
    # None of it is NMT's: the leaked streams add nothing to any tracked category's count.
    if level == "summary":
        check_headers_equal_tables(n)


def test_direct_and_unsafe_in_other(jvms):
    """Direct ByteBuffers and Unsafe.allocateMemory are os::malloc(mtOther)."""
    c = jvms.core("summary")
    n = nmt_doc(str(c.core))["nmt"]
    other = {x["name"]: x for x in n["categories"]}["Other"]["malloc"]
    t = c.truth
    assert other["bytes"] >= t["direct"]["bytes"] + t["unsafe"]["bytes"]
    assert other["count"] >= t["direct"]["count"] + t["unsafe"]["count"]


def test_live_pid_matches_jcmd(jvms):
    c = jvms.live("summary")
    r = run_cli("nmt", "--pid", c.pid, "--json")
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    doc = json.loads(r.stdout)
    bad = compare_with_jcmd(doc, c.jcmd)
    assert not bad, "\n".join(bad)
    check_headers_equal_tables(doc["nmt"])


def test_gdb_attached_to_live_jvm_matches_jcmd(jvms):
    """gdb attached to the running JVM (it traces the process, so the engine reads
    /proc/PID/mem with gdb's thread list, without ptrace of its own)."""
    c = jvms.live("summary")
    g = run_gdb("-p", str(c.pid), commands=["heapwalk nmt --json"], timeout=300)
    no_traceback(g)
    doc = extract_json(g.stdout)
    bad = compare_with_jcmd(doc, c.jcmd)
    assert not bad, "\n".join(bad)


def check_sites_and_regions(n: dict, theirs: dict, not_malloc: tuple[str, ...] = ()) -> None:
    """NMT detail: every site symbolised in libjvm, the per-category sums of the sites equal
    the raw malloc counters (but for `not_malloc` categories), the reserved regions add up to
    the mmap figures per category (Thread Stack into Thread), and the malloc sites jcmd printed
    before the snapshot (`theirs`) are ours, stack for stack. jcmd's own report changes a few
    (its ElfDecoder caches libjvm's symbol tables, mtInternal, to print those very stacks), so
    most, not all, must match exactly."""
    sites, regions = n["sites"], n["regions"]
    assert sites and regions
    assert all(s["frames"] and "libjvm.so!" in s["frames"][0]["symbol"] for s in sites[:50])
    per: dict[str, tuple[int, int]] = {}
    for s in sites:
        b, k = per.get(s["category"], (0, 0))
        per[s["category"]] = (b + s["bytes"], k + s["count"])
    raw = {x["name"]: (x["malloc"]["bytes"], x["malloc"]["count"]) for x in n["raw"]
           if x["malloc"]["count"] and x["name"] not in not_malloc}
    assert per == raw
    res: dict[str, int] = {}
    for r in regions:
        res[r["category"]] = res.get(r["category"], 0) + r["size"]
    assert res == {x["name"]: x["mmap"]["reserved"] for x in n["raw"] if x["mmap"]["reserved"]}
    ours = {tuple(f["symbol"].split("!", 1)[-1] for f in s["frames"]): (s["bytes"], s["count"])
            for s in sites}
    assert len(theirs) > 50
    same = [k for k, v in theirs.items() if ours.get(k) == v]
    assert len(same) >= 0.9 * len(theirs), [k for k in theirs if k not in same][:5]


def test_detail_sites_and_regions(jvms):
    c = jvms.core("detail")
    check_sites_and_regions(nmt_doc(str(c.core), detail=True)["nmt"], parse_jcmd_sites(c.jcmd_detail))


def parse_jcmd_sites(text: str) -> dict[tuple, tuple[int, int]]:
    """jcmd detail's malloc sites: frames ("func+0xoff") -> (bytes, count)."""
    out: dict[tuple, tuple[int, int]] = {}
    frames: list[str] = []
    body = text.split("Details:", 1)[-1]
    for line in body.splitlines():
        m = re.match(r"^\[0x[0-9a-f]+\] (.*)$", line)
        if m:
            frames.append(m.group(1).strip())
            continue
        m = re.match(r"^\s+\(malloc=(\d+) type=[^#)]*(?:#(\d+))?", line)
        if m and frames:
            out[tuple(frames)] = (int(m.group(1)), int(m.group(2) or 0))
        if not line.strip() or m:
            frames = []
    return out


def _symbols(frames: list[dict]) -> list[str]:
    """Our frames as jcmd prints them: "function+0xoff" (no "module!")."""
    return [f["symbol"].split("!", 1)[-1] for f in frames]


def test_detail_virtual_memory_map(jvms):
    """The reserved regions with the stacks that reserved them, and their committed parts with
    the stacks that committed them, equal jcmd's "Virtual memory map" printed before the snapshot."""
    c = jvms.core("detail")
    doc = nmt_doc(str(c.core), detail=True)
    check_vm_map(doc, c.jcmd_detail)
    # The text shows the same map, jcmd's way.
    r = run_cli("nmt", c.core, "--detail")
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    check_vm_map_text(r.stdout, c.jcmd_detail)


def check_vm_map(doc: dict, jcmd_detail: str, metaspace: str = "Metaspace") -> None:
    """heapwalk's regions == jcmd detail's "Virtual memory map" (see test_detail_virtual_memory_map);
    `metaspace`: the category of the metaspace reservations ("Class" before JDK 17's mtMetaspace)."""
    assert not [d for d in doc["diagnostics"] if d["kind"] != "note"], doc["diagnostics"]
    ours = {r["base"]: r for r in doc["nmt"]["regions"]}
    theirs = parse_jcmd_vm_map(jcmd_detail)
    assert len(theirs) >= 20, "jcmd printed too few regions to compare"
    assert sorted(ours) == [r.base for r in theirs], "the same reserved regions, in address order"
    bad: list[str] = []
    probed: list[str] = []  # Thread Stack regions whose stack-less (mincore-probed) parts differ
    same_parts = all_parts = 0
    for j in theirs:
        o = ours[j.base]
        what = f"{j.category} region at {j.base:#x}"
        head = (o["size"], o["category"], o["size"] == o["committed"], _symbols(o["frames"]))
        if head != (j.size, j.category, j.all_committed, j.frames):
            bad.append(f"{what}: jcmd {(j.size, j.category, j.all_committed, j.frames)}, heapwalk {head}")
        mine = [JcmdCommitted(x["base"], x["size"], _symbols(x["frames"])) for x in o["committed_regions"]]
        expected = j.committed_parts()
        all_parts += len(expected)
        same_parts += sum(1 for x in expected if x in mine)
        if mine == expected:
            continue
        # Only a thread stack's probed parts (no call stack) may differ; its guard pages, committed
        # by StackOverflow::create_stack_guard_pages with a stack, must not.
        if j.category == "Thread Stack" and [x for x in mine if x.frames] == [x for x in expected if x.frames]:
            probed.append(f"{what}: jcmd {expected}, heapwalk {mine}")
        else:
            bad.append(f"{what}: committed parts: jcmd {expected}, heapwalk {mine}")
    assert not bad, "\n".join(bad)
    assert len(probed) <= JCMD_STACK_PROBE_MAX_REGIONS, "\n".join(probed)
    assert same_parts >= 0.9 * all_parts, (same_parts, all_parts)
    # The big reservations, each with its stack and every committed part, all matched above.
    cats = {j.category for j in theirs}
    assert {"Java Heap", metaspace, "Class", "Code", "GC"} <= cats, cats
    assert all(ours[j.base]["frames"] and j.frames for j in theirs if j.category in ("Java Heap", metaspace, "Code"))


def check_vm_map_text(text: str, jcmd_detail: str, metaspace: str = "Metaspace") -> None:
    """The text of `nmt --detail` shows the map jcmd's way (`metaspace`: the category holding
    the metaspace, "Class" before JDK 17's mtMetaspace)."""
    assert "Virtual memory map:" in text
    meta = next(j for j in parse_jcmd_vm_map(jcmd_detail) if j.category == metaspace)
    assert f"reserved {meta.size} for {metaspace} from" in text
    assert f"] committed {meta.committed[0].size} from" in text
    assert meta.frames[0] in text


def test_cli_text_and_gdb(jvms):
    c = jvms.core("summary")
    r = run_cli("nmt", c.core)
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    for name in parse_jcmd(c.jcmd).categories:
        assert name in r.stdout
    g = run_gdb(str(JAVA), str(c.core), commands=["heapwalk nmt --json"], timeout=300)
    no_traceback(g)
    doc = extract_json(g.stdout)
    assert not compare_with_jcmd(doc, c.jcmd)
