"""Fixtures for the pytest-benchmark files (``python -m pytest benchmarks -o python_files='bench_*.py'``).

``VAEFUNC_BENCH_PRESET`` picks the sizes (default ``quick``); ``VAEFUNC_BENCH_DEVICE``
the device (default: cuda when available).
"""

from __future__ import annotations

import os

import pytest
import torch

from benchmarks.cases import PRESETS, load_data


@pytest.fixture(scope="session")
def device() -> torch.device:
    return torch.device(os.environ.get("VAEFUNC_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))


@pytest.fixture(scope="session")
def sizes(device):
    return PRESETS[(device.type, os.environ.get("VAEFUNC_BENCH_PRESET", "quick"))]


@pytest.fixture(scope="session")
def data(sizes, device):
    return load_data(sizes.n, sizes.d, device=device)[0]


def pytest_collection_modifyitems(items):
    # Inductor's first compile imports a torch module that uses the deprecated
    # torch.jit.script_method (torch's warning, not ours); warnings are errors here.
    for item in items:
        item.add_marker(pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"))
