"""The strategies and tensor helpers the other tests rely on."""

from __future__ import annotations

import torch
from hypothesis import given

from tests import strategies as S


@given(shape=S.vae_shapes(), b=S.batch_sizes, scale=S.scales)
def test_shapes_and_scales_are_small_and_bounded(shape, b, scale):
    d, z, hidden = shape
    assert 1 <= d <= 8 and 1 <= z <= 4 and 1 <= b <= 6
    assert len(hidden) <= 2 and all(1 <= h <= 8 for h in hidden)
    assert 0.1 <= scale <= 2.0


@given(seed=S.seeds)
def test_tensors_are_pure_functions_of_the_seed(seed):
    rng = torch.random.get_rng_state()
    a, b = S.randn(seed, 3, 4), S.randn(seed, 3, 4)
    assert torch.equal(a, b) and a.dtype == torch.float64
    assert torch.equal(torch.random.get_rng_state(), rng)  # the global RNG is untouched
    u = S.rand(seed, 50)
    assert bool(((u >= 0) & (u < 1)).all())
    assert not torch.equal(S.randn(seed, 8), S.randn(seed ^ 1, 8))


@given(seed=S.seeds, scale=S.scales, likelihood=S.likelihoods)
def test_scaled_params_and_data_keep_keys_shapes_and_ranges(seed, scale, likelihood):
    params = {"a.weight": torch.zeros(3, 2, dtype=torch.float64), "a.bias": torch.zeros(3, dtype=torch.float64)}
    out = S.scaled_params(params, seed, scale)
    assert S.shapes_of(out) == S.shapes_of(params) and list(out) == list(params)
    assert all(bool((v != 0).all()) for v in out.values())
    x = S.data_for(likelihood, seed, 4, 5)
    assert x.shape == (4, 5)
    if likelihood == "bernoulli":
        assert bool(((x >= 0) & (x <= 1)).all())
