from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from features import synthetic

SAMPLE_START, SAMPLE_END = date(2023, 1, 1), date(2026, 1, 1)


@pytest.fixture(scope="session")
def sample_data() -> synthetic.SyntheticData:
    """A small synthetic population (shared, read-only)."""
    return synthetic.generate(4000, seed=11, start=SAMPLE_START, end=SAMPLE_END)


@pytest.fixture(scope="session")
def sample_dir(
    sample_data: synthetic.SyntheticData, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    folder = tmp_path_factory.mktemp("sample")
    synthetic.write(sample_data, folder)
    return folder
