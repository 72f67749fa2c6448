"""streamed.pieces writes the bytes render.to_json writes for the whole document."""

from __future__ import annotations

import random

from heapwalk import render, streamed


def _batches(items, size):
    return [items[i:i + size] for i in range(0, len(items), size)]


def test_pieces_equal_to_json():
    rng = random.Random(15)
    for size in (1, 2, 3, 1000):
        rows = [(rng.randrange(1 << 47), rng.randrange(1 << 20), rng.choice(("used", "top")),
                 rng.choice((None, 0x7f0000000000)), rng.choice((None, 0x7f0000001000)))
                for _ in range(rng.randrange(0, 20))]
        pairs = [(rng.randrange(1 << 47), 48) for _ in range(rng.randrange(0, 9))]
        addresses = [rng.randrange(1 << 47) for _ in range(rng.randrange(0, 9))]
        whole = {"schema": "heapwalk/1", "command": "x",
                 "chunks": [dict(zip(("address", "size", "state", "arena", "heap"), r))
                            for r in rows],
                 "nested": {"lists": [{"a": addresses, "b": [{"address": a, "size": s}
                                                             for a, s in pairs]}, {}],
                            "empty": []},
                 "total": len(rows), "diagnostics": [{"detail": "bidi \u202e, DEL \x7f, é"}]}
        doc = {"schema": "heapwalk/1", "command": "x",
               "chunks": streamed.Stream(_batches(rows, size), streamed.encode_chunks),
               "nested": {"lists": [{"a": streamed.Stream(_batches(addresses, size),
                                                          streamed.encode_addresses),
                                     "b": streamed.Stream(_batches(pairs, size),
                                                          streamed.encode_sized)}, {}],
                          "empty": streamed.Stream([])},
               "total": streamed.Lazy(lambda: len(rows)),
               "diagnostics": streamed.Lazy(lambda: whole["diagnostics"])}
        assert "".join(streamed.pieces(doc)) == render.to_json(whole)
        assert doc["total"] == len(rows)  # a Lazy value is stored once computed
