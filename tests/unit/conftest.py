"""Fixtures the journal reader's unit tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.unit.test_tail import Consumer


@pytest.fixture
def consumer(tmp_path: Path) -> Iterator[Consumer]:
    """A journal reader over ``tmp_path`` with what it read (see :class:`Consumer`)."""
    c = Consumer(tmp_path)
    yield c
    c.close()
