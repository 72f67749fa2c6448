"""The Python API: open_core / attach / Target (fake engine)."""

from __future__ import annotations

import heapwalk


def test_open_core_and_context_manager(fake, core) -> None:
    with heapwalk.open_core(core, sysroot="/srv/root") as target:
        assert target.kind == "core" and target.label == core
        assert target.arenas()["glibc"]["version"] == "2.36"
        target.arenas()
        assert fake.calls.count(("arenas",)) == 1  # memoized
        assert target.arena_index() == {0x7FFFF7E19C80: 0, 0x7FFFF0000030: 1}
    assert target.closed
    assert fake.calls[0] == ("open_core", core, "/srv/root")
    assert fake.calls[-1] == ("close",)
    target.close()  # idempotent


def test_attach(fake) -> None:
    target = heapwalk.attach(42)
    assert target.kind == "live" and fake.calls[0] == ("attach", 42, None)
    assert target.chunks(state="free", limit=3)["truncated"] is True
    assert target.tcache(1000)["threads"][0]["lwp"] == 1000
    assert target.chunk(0x7FFFF0000048)["chunk"]["state"] == "tcache"
    target.close()
