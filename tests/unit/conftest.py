"""Unit tests run in seconds: one that takes minutes is hanging, so fail it early."""

from __future__ import annotations

from pathlib import Path

import pytest

UNIT_TIMEOUT_S = 120
UNIT_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items):
    for item in items:
        if UNIT_DIR in Path(item.fspath).resolve().parents and not item.get_closest_marker(
            "timeout"
        ):
            item.add_marker(pytest.mark.timeout(UNIT_TIMEOUT_S))
