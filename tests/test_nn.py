"""nn.py: pure layers equal torch.nn's, initialisation included."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from vaefunc.nn import init_linear, init_mlp, linear, mlp, mlp_layers
from tests import oracles
from tests import strategies as S


@given(d_in=st.integers(1, 9), d_out=st.integers(1, 9), seed=S.seeds)
def test_init_linear_draws_what_nn_linear_draws(d_in, d_out, seed):
    torch.manual_seed(seed)
    expected = nn.Linear(d_in, d_out).state_dict()
    got = init_linear(S.generator(seed), d_in, d_out)
    assert list(got) == ["weight", "bias"]
    for k in got:
        assert got[k].dtype == torch.float32
        assert torch.equal(got[k], expected[k]), k


def test_init_linear_respects_dtype():
    p = init_linear(S.generator(0), 3, 2, dtype=torch.float64)
    assert all(v.dtype == torch.float64 for v in p.values())


@given(d_in=st.integers(1, 9), d_out=st.integers(1, 9), seed=S.seeds)
def test_linear_equals_nn_linear(d_in, d_out, seed):
    params = init_linear(S.generator(seed), d_in, d_out, dtype=torch.float64)
    module = nn.Linear(d_in, d_out).to(torch.float64)
    x = S.randn(seed ^ 1, 4, d_in)
    expected = torch.func.functional_call(module, params, (x,))
    torch.testing.assert_close(linear(params, x), expected, rtol=0, atol=0)


@given(sizes=st.lists(st.integers(1, 7), min_size=2, max_size=4), seed=S.seeds)
def test_mlp_equals_sequential_with_the_same_keys_and_init(sizes, seed):
    torch.manual_seed(seed)
    module = oracles.mlp(sizes)
    params = init_mlp(S.generator(seed), sizes, prefix="net")
    expected = {f"net.{k}": v for k, v in module.state_dict().items()}
    assert list(params) == list(expected)
    for k in params:
        assert torch.equal(params[k], expected[k]), k
    assert len(mlp_layers(params, "net")) == len(sizes) - 1
    x = torch.randn(3, sizes[0], generator=S.generator(seed ^ 2))
    got = mlp(params, x, prefix="net")
    assert got.shape == (3, sizes[-1])
    torch.testing.assert_close(got, module(x), rtol=1e-6, atol=1e-6)
