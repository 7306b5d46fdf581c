"""The inverse autoregressive flow (vaefunc.flows): autoregressive, triangular, its log-determinant exact."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import jacrev

import vaefunc
from vaefunc import flows, latents

F64 = torch.float64


def iaf_model(z=5, steps=2, **fields):
    return vaefunc.VAE((12,), latent_dim=z, hidden=(8,), posterior="iaf", flow_steps=steps, activation="tanh",
                       **fields)  # fmt: skip


def random_params(model, seed=0):
    """Fresh params with every flow weight drawn (init zeroes each MADE's output layer)."""
    params = model.init(seed=seed, dtype=F64)
    g = torch.Generator().manual_seed(seed + 100)
    return {k: torch.randn(v.shape, generator=g, dtype=F64) * 0.5 if k.startswith("flow.") else v
            for k, v in params.items()}  # fmt: skip


@pytest.mark.parametrize("z, hidden", [(1, (4,)), (2, (3,)), (5, (10,)), (6, (7, 9))])
def test_made_outputs_depend_only_on_earlier_inputs(z, hidden):
    model = iaf_model(z=z, flow_hidden=hidden)
    params = random_params(model)
    z0 = torch.randn(z, dtype=F64)
    widths = (z, *hidden, 2 * z)
    for part in range(2):  # m, then s
        jac = jacrev(lambda v: flows.made(params, "flow.0", widths, v, "tanh")[part])(z0)  # (z, z)
        assert torch.all(jac.triu() == 0), "output i reads z_j for some j >= i"
        if z > 1:
            assert torch.all(jac.tril(-1)[1:, 0] != 0), "every later output reads z_1"


def test_an_iaf_step_is_lower_triangular_with_diagonal_sigma():
    model = iaf_model(z=5, steps=1)
    params = random_params(model)
    z0 = torch.randn(5, dtype=F64)
    jac = jacrev(lambda v: flows.iaf(model, params, v)[0])(z0)
    assert torch.all(jac.triu(1) == 0)
    _, s = flows.made(params, "flow.0", (5, 10, 10), z0, "tanh")
    torch.testing.assert_close(jac.diagonal(), torch.sigmoid(s + flows.FORGET_BIAS), rtol=1e-14, atol=0)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_the_log_determinant_matches_a_brute_force_change_of_variables(steps):
    """log q(z_T) = log N(z_0; mu, sigma) - log |det dz_T/dz_0|, the determinant from the full Jacobian."""
    model = iaf_model(z=4, steps=steps)
    params = random_params(model, seed=steps)
    g = torch.Generator().manual_seed(0)
    mu, logvar, eps = (torch.randn(4, generator=g, dtype=F64) for _ in range(3))
    s = latents.sample(model, params, mu, logvar, eps, None)
    z0 = mu + (0.5 * logvar).exp() * eps
    _, logabsdet = torch.linalg.slogdet(jacrev(lambda v: flows.iaf(model, params, v)[0])(z0))
    base = torch.distributions.Normal(mu, (0.5 * logvar).exp()).log_prob(z0).sum()
    torch.testing.assert_close(s.log_q, base - logabsdet, rtol=1e-13, atol=1e-12)
    torch.testing.assert_close(s.log_p, torch.distributions.Normal(0.0, 1.0).log_prob(s.z).sum(), rtol=1e-13,
                               atol=1e-12)  # fmt: skip


def test_the_flowed_density_integrates_to_one():
    """In 1-D the flow is invertible by bisection: integrate q(z_T) over z_T on a fine grid."""
    model = iaf_model(z=1, steps=3)
    params = random_params(model, seed=7)
    mu, logvar = torch.tensor([0.3], dtype=F64), torch.tensor([-0.4], dtype=F64)
    forward = lambda z0: flows.iaf(model, params, z0.unsqueeze(-1))[0].squeeze(-1)  # noqa: E731  (monotone)
    grid = torch.linspace(-12, 12, 200001, dtype=F64)
    lo, hi = torch.full_like(grid, -60.0), torch.full_like(grid, 60.0)
    for _ in range(80):  # z0 with forward(z0) = grid point
        mid = (lo + hi) / 2
        above = forward(mid) > grid
        lo, hi = torch.where(above, lo, mid), torch.where(above, mid, hi)
    eps = ((lo + hi) / 2 - mu) / (0.5 * logvar).exp()
    log_q = latents.sample(model, params, mu, logvar, eps.unsqueeze(-1), None).log_q
    mass = torch.trapezoid(log_q.exp(), grid)
    assert abs(float(mass) - 1.0) < 1e-6


def test_a_fresh_flow_keeps_most_of_z_and_trains():
    model = iaf_model(z=3)
    params = model.init(seed=0)
    z, log_det = flows.iaf(model, params, torch.ones(2, 3))
    gate = 1 / (1 + math.exp(-flows.FORGET_BIAS))
    torch.testing.assert_close(z, torch.full((2, 3), gate**2))
    torch.testing.assert_close(log_det, torch.full((2,), 6 * math.log(gate)))
    x = torch.bernoulli(torch.full((64, 12), 0.3), generator=torch.Generator().manual_seed(0))
    result = vaefunc.train(params, x, model=model, epochs=3, batch_size=16, compile=False, progress=False)
    assert not torch.equal(result.params["flow.1.2.weight"], params["flow.1.2.weight"])
    assert result.history[-1]["loss"] < result.history[0]["loss"]
