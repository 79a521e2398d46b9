"""Fixtures for the paycraft_migrate integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def mdir(tmp_path) -> Path:
    return tmp_path / "migrations"
