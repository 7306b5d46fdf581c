"""Priors: the standard normal, a learnable mixture of Gaussians and the VampPrior.

Statistical assertions use fixed seeds, float64 and 4 standard errors: the
false-alarm rate of each is P(|N(0, 1)| > 4) = 6.3e-5, and each has a negative
control (a deliberately wrong estimator) that fails the same check.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

import vaefunc
from vaefunc.priors import init_prior, kl_single_sample, normal_log_prob, prior_kind, standard_normal_log_prob

F64 = torch.float64
Z_CRIT = 4.0
M = 20_000  # Monte Carlo samples per posterior


def _posterior(seed=0, b=3, z=4):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, z, generator=gen, dtype=F64), 0.5 * torch.randn(b, z, generator=gen, dtype=F64)


def _mc_kl(params, mu, logvar, *, std_scale=1.0, seed=1):
    """(mean, standard error) over M samples of the single-sample KL term, per example."""
    eps = torch.randn(M, *mu.shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
    z = mu + std_scale * torch.exp(0.5 * logvar) * eps
    terms = kl_single_sample(vaefunc.VAE.from_params(params), params, mu, logvar, z)  # (M, b)
    return terms.mean(0), terms.std(0) / math.sqrt(M)


def _base(z=4):
    return vaefunc.VAE((6,), latent_dim=z, hidden=(5,)).init(0, dtype=F64)


def test_normal_log_prob_matches_torch_distributions():
    mu, logvar = _posterior()
    z = torch.randn(7, 3, 4, generator=torch.Generator().manual_seed(2), dtype=F64)
    ref = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1).log_prob(z)
    torch.testing.assert_close(normal_log_prob(z, mu, logvar), ref)
    torch.testing.assert_close(standard_normal_log_prob(z), Independent(Normal(0.0, torch.ones(4, dtype=F64)), 1).log_prob(z))


def test_monte_carlo_kl_is_unbiased_for_the_standard_normal():
    params = _base()
    mu, logvar = _posterior()
    mean, se = _mc_kl(params, mu, logvar)
    exact = vaefunc.kl_normal(mu, logvar)
    assert bool(((mean - exact).abs() < Z_CRIT * se).all()), (mean, exact, se)
    # Negative control: samples from a posterior 10% too wide are not q's samples; the check catches it.
    bad, bad_se = _mc_kl(params, mu, logvar, std_scale=1.1)
    assert bool(((bad - exact).abs() > Z_CRIT * bad_se).any())


def test_mixture_with_one_standard_component_is_the_standard_normal():
    params = init_prior(_base(), "mog", n_components=1)
    params["prior.means"] = torch.zeros_like(params["prior.means"])
    assert prior_kind(params) == "mog"
    z = torch.randn(10, 4, generator=torch.Generator().manual_seed(3), dtype=F64)
    torch.testing.assert_close(vaefunc.VAE.from_params(params).prior_log_prob(params, z), standard_normal_log_prob(z))
    mu, logvar = _posterior()
    mean, se = _mc_kl(params, mu, logvar)
    assert bool(((mean - vaefunc.kl_normal(mu, logvar)).abs() < Z_CRIT * se).all())


def test_mixture_log_prob_matches_torch_distributions():
    params = init_prior(_base(), "mog", n_components=3, seed=4)
    params["prior.logits"] = torch.tensor([0.5, -1.0, 0.2], dtype=F64)
    params["prior.logvars"] = 0.3 * torch.randn(3, 4, generator=torch.Generator().manual_seed(5), dtype=F64)
    ref_dist = MixtureSameFamily(
        Categorical(logits=params["prior.logits"]),
        Independent(Normal(params["prior.means"], torch.exp(0.5 * params["prior.logvars"])), 1),
    )
    z = torch.randn(6, 2, 4, generator=torch.Generator().manual_seed(6), dtype=F64)
    torch.testing.assert_close(vaefunc.VAE.from_params(params).prior_log_prob(params, z), ref_dist.log_prob(z))


def test_vamp_prior_is_the_mixture_of_the_encoders_posteriors_at_the_pseudo_inputs():
    params = init_prior(_base(), "vamp", n_components=4, seed=7)
    assert prior_kind(params) == "vamp" and params["prior.pseudo_inputs"].shape == (4, 6)
    mu, logvar = vaefunc.VAE.from_params(params).encode(params, params["prior.pseudo_inputs"])
    ref_dist = MixtureSameFamily(Categorical(logits=torch.zeros(4, dtype=F64)), Independent(Normal(mu, torch.exp(0.5 * logvar)), 1))
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(8), dtype=F64)
    torch.testing.assert_close(vaefunc.VAE.from_params(params).prior_log_prob(params, z), ref_dist.log_prob(z))


def test_elbo_uses_the_closed_form_only_when_it_exists():
    gen = torch.Generator().manual_seed(0)
    x, eps = torch.rand(5, 6, generator=gen, dtype=F64), torch.randn(5, 4, generator=gen, dtype=F64)
    model = vaefunc.VAE((6,), latent_dim=4, hidden=(5,))
    params = model.init(0, dtype=F64)
    mu, logvar = model.encode(params, x)
    z = model.reparameterize(mu, logvar, eps)
    rec = vaefunc.bernoulli_log_prob(model.decode(params, z), x)
    torch.testing.assert_close(model.elbo(params, x, eps), rec - vaefunc.kl_normal(mu, logvar))
    torch.testing.assert_close(model.elbo(params, x, eps, kl="mc"), rec - kl_single_sample(model, params, mu, logvar, z))
    for kind in ("mog", "vamp"):
        with_prior = vaefunc.VAE((6,), latent_dim=4, hidden=(5,), prior=kind, prior_components=3)
        p = with_prior.init(0, dtype=F64)  # the same network as params, and a prior
        torch.testing.assert_close(with_prior.elbo(p, x, eps), rec - kl_single_sample(with_prior, p, mu, logvar, z))
        with pytest.raises(ValueError, match="closed"):
            with_prior.elbo(p, x, eps, kl="closed")


def test_prior_params_get_gradients_and_train():
    gen = torch.Generator().manual_seed(0)
    x, eps = torch.rand(5, 6, generator=gen, dtype=F64), torch.randn(5, 4, generator=gen, dtype=F64)
    for kind in ("mog", "vamp"):
        model = vaefunc.VAE((6,), latent_dim=4, hidden=(5,), prior=kind, prior_components=3)
        p = model.init(0, dtype=F64)
        grads = torch.func.grad(lambda q: model.elbo(q, x, eps).sum())(p)
        for key in (k for k in p if k.startswith("prior.")):
            assert bool(grads[key].abs().sum() > 0), key
    data = torch.rand(64, 6, generator=gen)
    p = vaefunc.VAE((6,), latent_dim=2, hidden=(5,), prior="mog", prior_components=2).init()
    result = vaefunc.train(p, data, epochs=2, batch_size=16, progress=False, compile=False)
    assert not torch.equal(result.params["prior.means"], p["prior.means"])
    with pytest.raises(ValueError, match="free bits"):  # per-dimension KL needs the closed form
        vaefunc.train(p, data, kl_schedule=vaefunc.free_bits(0.5), progress=False)
