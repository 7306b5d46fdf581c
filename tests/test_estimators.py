"""The reparameterized gradient of the single-sample ELBO is unbiased; a biased
estimator and the score-function estimator are told apart from it.

The model is the linear-Gaussian VAE (``init(..., hidden=())``, Gaussian
likelihood with unit variance, float64), whose expected ELBO has a closed form:
with q(z|x) = N(mu, diag s^2), decoder x ~ N(Wz + b, I) and W_j the j-th column of W,

    E_q ||x - Wz - b||^2 = ||x - W mu - b||^2 + sum_j s_j^2 ||W_j||^2,

so  E_q[ELBO] = -1/2 (that) - d/2 log(2 pi) - KL(q || N(0, I)),  exactly.

Statistical protocol: M gradient samples from a FIXED eps seed (hypothesis draws
sizes, the params/data seed and the scales, never the noise). Each coordinate's
sample mean must lie within zcrit standard errors of the exact gradient, with
zcrit Bonferroni-corrected over all K coordinates for a two-sided false-alarm
rate of ALPHA = 1e-4 per example (normal approximation of the mean of M i.i.d.
draws with finite variance: every gradient here is a polynomial in eps).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given
from scipy.stats import norm
from torch.func import grad, vmap

import vaefunc
from tests import strategies as S

ALPHA = 1e-4  # two-sided false-alarm rate per hypothesis example (all coordinates together)
EPS_SEED = 20251125  # the one fixed seed of the noise; hypothesis never picks it
M = 2000  # gradient samples per check
ABS_FLOOR = 1e-9  # rounding slack for coordinates whose estimator is (near) deterministic


def linear_gaussian(d: int, z: int, seed: int, enc_scale: float, dec_scale: float, b: int):
    """Linear-Gaussian VAE params (init's draws, rescaled) and (b, d) N(0, 1) data, float64."""
    params = vaefunc.init((d,), latent_dim=z, hidden=(), seed=seed, dtype=torch.float64)
    params = {k: v * (enc_scale if k.startswith("encoder") else dec_scale) for k, v in params.items()}
    x = S.randn(seed + 1, b, d)
    return params, x


def expected_elbo(params: dict, x: torch.Tensor, *, std_factor: float = 1.0) -> torch.Tensor:
    """Closed-form batch mean of E_q[ELBO], from the weights alone (no vaefunc maths).

    ``std_factor`` c gives the expectation of the estimator that samples z with
    std c * s (used to get the exact bias of the negative control).
    """
    we, be = params["encoder.0.weight"], params["encoder.0.bias"]
    w, b = params["decoder.0.weight"], params["decoder.0.bias"]
    z = w.shape[1]
    h = x @ we.T + be
    mu, logvar = h[:, :z], h[:, z:]
    resid = (x - mu @ w.T - b).square().sum(-1)
    spread = (std_factor**2 * logvar.exp() * w.square().sum(0)).sum(-1)  # sum_j c^2 s_j^2 ||W_j||^2
    rec = -0.5 * (resid + spread) - 0.5 * x.shape[1] * math.log(2 * math.pi)
    kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1)
    return (rec - kl).mean()


def reparam_grads(params: dict, x: torch.Tensor, eps: torch.Tensor, *, std_factor: float = 1.0) -> dict:
    """Gradients of the single-sample ELBO (batch mean), one per eps draw: eps (m, b, z) -> (m, ...).

    ``std_factor`` != 1 is the deliberately biased estimator z = mu + c * s * eps.
    """

    def single(p, e):
        return vaefunc.elbo(p, x, std_factor * e, likelihood="gaussian").mean()

    return vmap(grad(single), in_dims=(None, 0))(params, eps)


def score_grads(params: dict, x: torch.Tensor, eps: torch.Tensor) -> dict:
    """REINFORCE gradients of the ELBO w.r.t. the encoder, one per eps draw: (m, ...).

    grad_phi E_q[log p(x|z)] = E_q[log p(x|z) grad_phi log q(z|x)], with z and
    log p(x|z) computed outside the differentiated function (constants to it);
    the KL's gradient is exact, as in the reparameterized estimator.
    """
    with torch.no_grad():
        mu, logvar = vaefunc.encode(params, x)
        zs = vaefunc.reparameterize(mu, logvar, eps)  # (m, b, z)
        rec = vaefunc.gaussian_log_prob(vaefunc.decode(params, zs), x)  # (m, b)
    enc = {k: v for k, v in params.items() if k.startswith("encoder")}

    def surrogate(p, z_sample, f):
        mu, logvar = vaefunc.encode(p, x)
        log_q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(z_sample).sum(-1)
        return (f * log_q - vaefunc.kl_normal(mu, logvar)).mean()

    return vmap(grad(surrogate), in_dims=(None, 0, 0))(enc, zs, rec)


def zcrit(n_coords: int, alpha: float = ALPHA) -> float:
    """Two-sided Bonferroni critical value: P(any |Z_k| > zcrit) <= alpha over n_coords."""
    return float(norm.isf(alpha / (2 * n_coords)))


def standardized_errors(samples: dict, target: dict) -> dict:
    """|mean - target| / (standard error + floor), per coordinate."""
    out = {}
    for k, s in samples.items():
        m = s.shape[0]
        se = s.std(0, correction=1) / math.sqrt(m)
        out[k] = (s.mean(0) - target[k]).abs() / (se + ABS_FLOOR * (1 + target[k].abs()))
    return out


def agrees_in_expectation(samples: dict, target: dict, alpha: float = ALPHA) -> tuple[bool, float, float]:
    """(every coordinate within zcrit standard errors, worst standardized error, zcrit)."""
    errs = standardized_errors(samples, target)
    k = sum(e.numel() for e in errs.values())
    worst = max(float(e.max()) for e in errs.values())
    zc = zcrit(k, alpha)
    return worst <= zc, worst, zc


def fixed_eps(m: int, b: int, z: int) -> torch.Tensor:
    return S.randn(EPS_SEED, m, b, z)


@given(
    b=S.batch_sizes,
    d=S.data_dims,
    z=S.latent_dims,
    seed=S.seeds.filter(lambda s: s < 2**32 - 2),
    enc_scale=S.scales,
    dec_scale=S.scales,
)
def test_reparameterized_gradient_is_unbiased(b, d, z, seed, enc_scale, dec_scale):
    params, x = linear_gaussian(d, z, seed, enc_scale, dec_scale, b)
    mu, logvar = vaefunc.encode(params, x)
    assume(bool((logvar.abs() < 15).all()))  # stay clear of encode's clamp, where the closed form differs
    exact = grad(expected_elbo)(params, x)
    samples = reparam_grads(params, x, fixed_eps(M, b, z))
    ok, worst, zc = agrees_in_expectation(samples, exact)
    assert ok, f"a coordinate's mean gradient is {worst:.2f} standard errors from the exact one (zcrit {zc:.2f})"


def test_biased_estimator_fails_the_same_check():
    """Negative control: sampling z with std 1.1 * s biases the gradient; the check catches it.

    Power: the biased estimator's expectation is exactly grad E[ELBO with s -> 1.1 s in
    the reconstruction term] (``expected_elbo(std_factor=1.1)``), so the bias per
    coordinate is known. If some coordinate has |bias| / se >= zcrit + 4, that
    coordinate alone exceeds zcrit with probability >= Phi(4) = 0.99997. With this
    model (large posterior std, so the s^2 ||W_j||^2 term dominates) and M = 8000
    the best coordinate's |bias| / se is about 17, well past zcrit + 4 (about 8.7).
    """
    m = 8000
    params, x = linear_gaussian(4, 2, seed=7, enc_scale=1.0, dec_scale=1.5, b=3)
    params["encoder.0.bias"] = params["encoder.0.bias"] + torch.tensor([0.0, 0.0, 1.5, 1.5], dtype=torch.float64)
    exact = grad(expected_elbo)(params, x)
    biased_mean = grad(lambda p, xx: expected_elbo(p, xx, std_factor=1.1))(params, x)
    samples = reparam_grads(params, x, fixed_eps(m, 3, 2), std_factor=1.1)

    n_coords = sum(v.numel() for v in exact.values())
    se = {k: s.std(0, correction=1) / math.sqrt(m) for k, s in samples.items()}
    power_margin = max(float(((biased_mean[k] - exact[k]).abs() / se[k]).max()) for k in exact)
    assert power_margin >= zcrit(n_coords) + 4.0, f"the control lacks power: best |bias|/se = {power_margin:.1f}"

    ok, worst, zc = agrees_in_expectation(samples, exact)
    assert not ok, f"the biased estimator passed (worst {worst:.2f} <= zcrit {zc:.2f})"
    # ... and the same samples agree with the biased estimator's own exact expectation.
    assert agrees_in_expectation(samples, biased_mean)[0]


@given(
    b=S.batch_sizes,
    d=S.data_dims,
    z=S.latent_dims,
    seed=S.seeds.filter(lambda s: s < 2**32 - 2),
    enc_scale=S.scales,
    dec_scale=S.scales,
)
def test_score_function_estimator_is_unbiased_with_larger_variance(b, d, z, seed, enc_scale, dec_scale):
    params, x = linear_gaussian(d, z, seed, enc_scale, dec_scale, b)
    _, logvar = vaefunc.encode(params, x)
    assume(bool((logvar.abs() < 15).all()))
    eps = fixed_eps(M, b, z)
    exact = grad(expected_elbo)(params, x)
    exact_enc = {k: v for k, v in exact.items() if k.startswith("encoder")}
    score = score_grads(params, x, eps)
    ok, worst, zc = agrees_in_expectation(score, exact_enc)
    assert ok, f"REINFORCE mean is {worst:.2f} standard errors from the exact gradient (zcrit {zc:.2f})"

    reparam = reparam_grads(params, x, eps)
    var_score = sum(float(score[k].var(0).sum()) for k in exact_enc)
    var_reparam = sum(float(reparam[k].var(0).sum()) for k in exact_enc)
    assert var_score > var_reparam, f"total variance: score {var_score:.3g} <= reparameterized {var_reparam:.3g}"


@pytest.mark.parametrize("std_factor", [1.0, 1.1])
def test_closed_form_matches_a_monte_carlo_estimate_of_the_elbo(std_factor):
    """The closed form itself (the oracle above) against plain Monte Carlo of vaefunc.elbo."""
    params, x = linear_gaussian(3, 2, seed=1, enc_scale=1.0, dec_scale=1.0, b=4)
    m = 20000
    eps = fixed_eps(m, 4, 2) * std_factor
    vals = vmap(lambda e: vaefunc.elbo(params, x, e, likelihood="gaussian").mean())(eps)
    se = float(vals.std()) / math.sqrt(m)
    gap = abs(float(vals.mean()) - float(expected_elbo(params, x, std_factor=std_factor)))
    assert gap <= zcrit(1) * se, f"{gap:.3g} > {zcrit(1):.2f} * {se:.3g}"
