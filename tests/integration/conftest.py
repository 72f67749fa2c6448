"""Session fixtures for the integration tests; the machinery lives in hwkit.py."""

from __future__ import annotations

import pytest

from hwkit import CACHE, Corpora


@pytest.fixture(scope="session")
def corpora(tmp_path_factory) -> Corpora:
    """Builds corpora programs, makes (cached) cores and live processes; kills the live ones at
    the end of the session."""
    c = Corpora(CACHE, tmp_path_factory.mktemp("corpora"))
    yield c
    c.close()
