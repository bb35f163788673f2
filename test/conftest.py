"""Shared test fixtures: sample data location and ROS isolation."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Keep DDS traffic of the tests on this machine and away from other ROS users.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(40 + os.getpid() % 50))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the repository; absent only in a user's own clone (never in CI)."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"sample data folder {SHARED_DATA} is missing in CI")
        pytest.skip(f"sample data folder {SHARED_DATA} is absent (it ships beside the repo in CI)")
    return SHARED_DATA


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Small optimisation problems on the CI machine's shared cores: one thread is faster and steadier."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
