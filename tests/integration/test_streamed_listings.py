"""Streamed listings (issue 15, "listings on big heaps"): `chunks --json` and `bins --json` are
written a batch at a time, byte for byte the documents the non-streaming bindings
(`Target.chunks()`, `Target.bins()`, which build every record as a Python object) give, and
`chunks --json --limit 0` runs on a 300k-chunk core under a data-segment bound the old way
cannot meet."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import pytest

from hwkit import ASAN_PRELOAD, REPO, describe, heapwalk_env, import_heapwalk, no_traceback, run_cli

#: RLIMIT_DATA for the bounded run (the core is mmapped read-only, which the bound leaves
#: out): the old document of the 300k-chunk core alone took ~540 MiB of Python objects.
DATA_BOUND = 160 << 20


@pytest.fixture(scope="module")
def core4(corpora):
    return corpora.core("arenas", "4", "0")


def old_document(core: str, command: str, *args) -> str:
    """The document as heapwalk wrote it before streaming: the whole record, then to_json."""
    heapwalk = import_heapwalk()
    from heapwalk import render  # noqa: PLC0415

    with heapwalk.open_core(core) as target:
        return render.to_json(render.wrap(command, getattr(target, command)(*args)))


@pytest.mark.parametrize("argv,old", [
    (["chunks", "--limit", "0"], ("chunks", None, "all", None)),
    (["chunks", "--free", "--limit", "0"], ("chunks", None, "free", None)),
    (["chunks", "--used", "--limit", "7"], ("chunks", None, "used", 7)),
    (["chunks", "--arena", "1"], ("chunks", 1, "all", None)),
    (["bins"], ("bins", None)),
    (["bins", "1"], ("bins", 1)),
], ids=lambda v: "-".join(map(str, v)) if isinstance(v, list) else "")
def test_streamed_json_is_the_old_document(core4, argv, old):
    r = run_cli(argv[0], core4.core, *argv[1:], "--json")
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    assert r.stdout == old_document(str(core4.core), *old)


def test_small_batches_give_the_same_bytes(core4, monkeypatch):
    """Many batches (3 chunks each) and empty lists join as one document would."""
    heapwalk = import_heapwalk()
    from heapwalk import commands  # noqa: PLC0415
    from heapwalk.target import Target  # noqa: PLC0415

    monkeypatch.setattr(commands, "STREAM_BATCH", 3)
    for name, args, old in (("chunks", {"arena": None, "state": "free", "limit": None},
                             ("chunks", None, "free", None)),
                            ("chunks", {"arena": None, "state": "all", "limit": 10},
                             ("chunks", None, "all", 10)),
                            ("bins", {"arena": None}, ("bins", None))):
        with heapwalk.open_core(str(core4.core)) as target:
            assert isinstance(target, Target) and target.streams
            ns = argparse.Namespace(json=True, **args)
            out = commands.execute(commands.COMMANDS[name], commands.Invocation(target, ns),
                                   stream=True)
            text = "".join(out.pieces)
            assert commands.COMMANDS[name].status(out.document) == 0
        assert text == old_document(str(core4.core), *old), name
        json.loads(text)


def _bounded():
    resource.setrlimit(resource.RLIMIT_DATA, (DATA_BOUND, DATA_BOUND))


@pytest.mark.skipif(bool(ASAN_PRELOAD), reason="ASan's shadow and quarantine do not fit an "
                    "RLIMIT_DATA bound; the plain run checks the bound")
def test_listings_under_a_memory_bound(corpora):
    c = corpora.core("many", "300000", "4")
    for argv in (["chunks", "--limit", "0"], ["bins", "--json"]):
        r = subprocess.run([sys.executable, "-m", "heapwalk", argv[0], str(c.core), *argv[1:]],
                           cwd=str(REPO), env=heapwalk_env(), capture_output=True, text=True,
                           timeout=600, preexec_fn=_bounded)
        no_traceback(r)
        assert r.returncode == 0, describe(r)
        assert r.stdout.endswith(" chunks shown of %d\n" % (len(r.stdout.splitlines()) - 2)) \
            if argv[0] == "chunks" else json.loads(r.stdout)["arenas"]
    r = subprocess.run([sys.executable, "-m", "heapwalk", "chunks", str(c.core), "--limit", "0",
                        "--json"], cwd=str(REPO), env=heapwalk_env(), capture_output=True,
                       text=True, timeout=600, preexec_fn=_bounded)
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    doc = json.loads(r.stdout)
    assert doc["total"] == len(doc["chunks"]) > 300000 and not doc["truncated"]
    # The count equals the walk's own accounting (arenas: in use + free + top per arena,
    # mmapped chunks), which test_oracle_core checks against malloc_info.
    arenas = json.loads(run_cli("arenas", c.core, "--json").stdout)
    states = {}
    for chunk in doc["chunks"]:
        states[chunk["state"]] = states.get(chunk["state"], 0) + 1
    assert states.get("mmapped", 0) == arenas["mmapped"]["count"]
    assert states.get("top", 0) == len(arenas["arenas"])


def _old_cli(argv, monkeypatch):
    """What heapwalk printed before streaming: the engine's whole documents (Target.streams
    False takes the non-streaming bindings), rendered in-process."""
    import_heapwalk()
    import io  # noqa: PLC0415

    from heapwalk import cli  # noqa: PLC0415
    from heapwalk.target import Target  # noqa: PLC0415

    with monkeypatch.context() as m:
        m.setattr(Target, "streams", property(lambda self: False))
        out, err = io.StringIO(), io.StringIO()
        status = cli.run(argv, out, err)
    assert status == 0, err.getvalue()
    return out.getvalue()


@pytest.mark.parametrize("argv", [["chunks", "--limit", "0"], ["chunks", "--free", "--limit", "0"],
                                  ["chunks", "--arena", "1", "--limit", "0"], ["bins"],
                                  ["bins", "1"]], ids="-".join)
def test_streamed_text_is_the_old_text(core4, argv, monkeypatch):
    r = run_cli(argv[0], core4.core, *argv[1:])
    no_traceback(r)
    assert r.returncode == 0, describe(r)
    assert r.stdout == _old_cli([argv[0], str(core4.core)] + argv[1:], monkeypatch)


@pytest.mark.parametrize("columns", ["40", "200"])
def test_streamed_text_fits_the_width_as_before(core4, columns, monkeypatch):
    """$COLUMNS 40 splits the chunks table (it then comes from the whole document), 200 not."""
    r = run_cli("chunks", core4.core, "--limit", "0", extra_env={"COLUMNS": columns})
    assert r.returncode == 0, describe(r)
    monkeypatch.setenv("COLUMNS", columns)
    assert r.stdout == _old_cli(["chunks", str(core4.core), "--limit", "0"], monkeypatch)


def test_out_of_memory_is_one_line(core4, monkeypatch):
    """MemoryError anywhere: one line, not `internal error: MemoryError`."""
    import_heapwalk()
    import io  # noqa: PLC0415

    from heapwalk import cli  # noqa: PLC0415
    from heapwalk.target import Target  # noqa: PLC0415

    def no_memory(*_args, **_kwargs):
        raise MemoryError()
    monkeypatch.setattr(Target, "chunk_stream", no_memory)
    out, err = io.StringIO(), io.StringIO()
    assert cli.run(["chunks", str(core4.core), "--limit", "0", "--json"], out, err) == 1
    lines = err.getvalue().splitlines()
    assert lines[0] == "heapwalk: %s: out of memory" % core4.core, lines
    assert len(lines) == 2 and lines[1].startswith("hint: "), lines
