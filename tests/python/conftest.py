"""Fixtures: the package on sys.path and a fake ``heapwalk._native``."""

from __future__ import annotations

import io
import os
import sys
from typing import Callable, Tuple

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "python"))
sys.path.insert(0, HERE)

import heapwalk  # noqa: E402
from heapwalk import cli  # noqa: E402
from fake_native import FakeNative  # noqa: E402


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeNative:
    """Replace ``heapwalk._native`` with a fake that returns canned records."""
    native = FakeNative()
    monkeypatch.setattr(heapwalk, "_native", native, raising=False)
    return native


@pytest.fixture
def core(tmp_path) -> str:
    """A file standing for a core (the fake engine never reads it)."""
    path = tmp_path / "core.1234"
    path.write_bytes(b"\x7fELF")
    return str(path)


Run = Callable[..., Tuple[int, str, str]]


@pytest.fixture
def run() -> Run:
    """Run the CLI in-process: returns (status, stdout, stderr)."""
    def _run(*argv: str) -> Tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        status = cli.run(list(argv), out, err)
        return status, out.getvalue(), err.getvalue()
    return _run
