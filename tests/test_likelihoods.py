"""Observation models: Bernoulli, Gaussian (fixed, learned global, learned per pixel)
and the continuous Bernoulli, whose density must integrate to 1 on [0, 1]."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import integrate

import vaefunc
from vaefunc.likelihoods import (
    LOGSTD_KEY,
    bernoulli_log_prob,
    continuous_bernoulli_log_norm,
    continuous_bernoulli_log_prob,
    continuous_bernoulli_mean,
    gaussian_log_prob,
    init_obs_logstd,
    obs_log_prob,
)

F64 = torch.float64
LAMBDAS = (1e-6, 1e-3, 0.1, 0.3, 0.49, 0.4999, 0.5, 0.5001, 0.51, 0.7, 0.999, 1 - 1e-6)


def _logit(lam: float) -> torch.Tensor:
    return torch.logit(torch.tensor(lam, dtype=F64))


@pytest.mark.parametrize("lam", LAMBDAS)
def test_continuous_bernoulli_density_integrates_to_one(lam):
    logit = _logit(lam).reshape(1)

    def density(x: float) -> float:
        return math.exp(float(continuous_bernoulli_log_prob(logit, torch.tensor([x], dtype=F64))))

    # The mass sits within a few 1/|logit| of an end when lambda is near 0 or 1: tell quad.
    points = [1 / abs(float(logit)), 1 - 1 / abs(float(logit))] if abs(float(logit)) > 2 else None
    total, err = integrate.quad(density, 0.0, 1.0, points=points, limit=200, epsabs=1e-12, epsrel=1e-10)
    assert abs(total - 1.0) < 1e-8, (lam, total, err)


def test_continuous_bernoulli_matches_torch_distributions_away_from_one_half():
    lam = torch.tensor([1e-4, 0.05, 0.3, 0.45, 0.55, 0.9, 0.9999], dtype=F64)
    x = torch.linspace(0, 1, 7, dtype=F64)
    ref = torch.distributions.ContinuousBernoulli(probs=lam).log_prob(x)
    got = torch.stack([continuous_bernoulli_log_prob(torch.logit(l).reshape(1), xi.reshape(1)) for l, xi in zip(lam, x)])
    torch.testing.assert_close(got, ref)


def test_continuous_bernoulli_log_norm_is_smooth_and_finite_at_one_half():
    # log C is log 2 at logit 0, continuous across the Taylor branch at |logit| = 1e-2,
    # and its gradient (logit / 6 near 0) is finite, in float32 and float64.
    for dtype in (torch.float32, F64):
        eta = torch.tensor([0.0, 1e-8, 9.999e-3, 1e-2, 1.0001e-2, -1e-2, 0.3], dtype=dtype, requires_grad=True)
        val = continuous_bernoulli_log_norm(eta)
        (grad,) = torch.autograd.grad(val.sum(), eta)
        val = val.detach()
        assert torch.isfinite(val).all() and torch.isfinite(grad).all()
        assert float(val[0]) == pytest.approx(math.log(2.0))
        assert abs(float(val[2] - val[4])) < 1e-6
        torch.testing.assert_close(grad[:6], (eta / 6.0).detach()[:6], atol=1e-5, rtol=1e-3)
    # the closed form, in float64 where it is accurate, agrees with the series on both sides
    eta = torch.tensor([0.005, 0.0099, 0.0101, 0.05], dtype=F64)
    closed = torch.log(eta / torch.tanh(eta / 2))
    torch.testing.assert_close(continuous_bernoulli_log_norm(eta), closed, rtol=0, atol=1e-12)


def test_continuous_bernoulli_mean():
    for lam in (1e-3, 0.2, 0.5, 0.5001, 0.9):
        logit = _logit(lam)
        num, _ = integrate.quad(
            lambda x: x * math.exp(float(continuous_bernoulli_log_prob(logit.reshape(1), torch.tensor([x], dtype=F64)))),
            0.0, 1.0, epsabs=1e-12,
        )  # fmt: skip
        assert float(continuous_bernoulli_mean(logit)) == pytest.approx(num, abs=1e-7)


def test_bernoulli_log_prob_equals_binary_cross_entropy():
    gen = torch.Generator().manual_seed(0)
    logits = 30 * torch.randn(4, 50, generator=gen, dtype=F64)
    x = torch.rand(4, 50, generator=gen, dtype=F64)
    ref = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    torch.testing.assert_close(bernoulli_log_prob(logits, x), ref, rtol=1e-12, atol=1e-10)


def test_learned_gaussian_log_std_global_and_per_pixel():
    params = vaefunc.VAE((6,), latent_dim=2, hidden=()).init(dtype=F64)
    gen = torch.Generator().manual_seed(0)
    mean, x = torch.randn(3, 6, generator=gen, dtype=F64), torch.randn(3, 6, generator=gen, dtype=F64)
    glob = init_obs_logstd(params, std=0.3)
    assert glob[LOGSTD_KEY].shape == () and LOGSTD_KEY not in params  # a copy; the input is untouched
    torch.testing.assert_close(obs_log_prob(glob, mean, x, likelihood="gaussian"), gaussian_log_prob(mean, x, 0.3))
    pix = init_obs_logstd(params, per_pixel=True) | {LOGSTD_KEY: torch.log(torch.linspace(0.1, 2, 6, dtype=F64))}
    ref = torch.distributions.Normal(mean, torch.linspace(0.1, 2, 6, dtype=F64)).log_prob(x).sum(-1)
    torch.testing.assert_close(obs_log_prob(pix, mean, x, likelihood="gaussian"), ref)
    with pytest.raises(ValueError, match="std"):
        init_obs_logstd(params, std=0.0)


def test_train_learns_the_observation_std():
    # Data with noise std 0.3 around a 1-d structure: the learned global std moves from 1 towards it.
    gen = torch.Generator().manual_seed(0)
    t = torch.randn(512, 1, generator=gen)
    x = t @ torch.ones(1, 8) + 0.3 * torch.randn(512, 8, generator=gen)
    params = vaefunc.VAE((8,), latent_dim=1, hidden=()).init(0)
    for mode, shape in (("global", ()), ("pixel", (8,))):
        result = vaefunc.train(
            params, x, epochs=6, batch_size=64, lr=3e-2, likelihood="gaussian", learn_obs_std=mode,
            progress=False, compile=False,
        )  # fmt: skip
        std = result.params[LOGSTD_KEY].exp()
        assert std.shape == shape and bool((std < 0.95).all()) and float(std.mean()) < 0.75, std
    with pytest.raises(ValueError, match="gaussian"):
        vaefunc.train(params, x.clamp(0, 1), learn_obs_std="global", progress=False)


def test_continuous_bernoulli_trains_and_checks_the_data_range():
    x = torch.rand(128, 10, generator=torch.Generator().manual_seed(0))
    params = vaefunc.VAE((10,), latent_dim=2, hidden=(8,)).init(0)
    result = vaefunc.train(params, x, epochs=3, batch_size=32, likelihood="continuous_bernoulli", progress=False)
    assert np.isfinite([h["loss"] for h in result.history]).all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        vaefunc.train(params, x + 1.0, likelihood="continuous_bernoulli", progress=False)
