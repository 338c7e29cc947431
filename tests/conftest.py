"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: Folder holding the real datasets (``ferplus/``, ...): ``$ROBUSTFER_DATA`` or ../shared/data.
DATA_ROOT = Path(os.environ.get("ROBUSTFER_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real-data folder, or skip the test when it is absent."""
    if not DATA_ROOT.is_dir():
        pytest.skip(f"real data not found at {DATA_ROOT}; set ROBUSTFER_DATA")
    return DATA_ROOT


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread is faster and does not fight a concurrent run for cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
