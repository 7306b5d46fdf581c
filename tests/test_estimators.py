"""The reparameterized gradient of the single-sample ELBO is unbiased; biased
estimators and the score-function estimator are told apart from it.

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

Power. A mutant that samples z = mu + c s eps has the expectation of the exact
ELBO with s -> c s in the reconstruction term, so its bias is (c^2 - 1) times the
mean of the part of the gradient that is quadratic in eps; for c = 1.02 that is
0.04 of it. The noise of the coordinates that carry that bias is itself mostly
quadratic in eps (chi-square-like), which antithetic pairs (eps, -eps) leave
untouched: measured on the negative controls' setting, a pair's |bias|/sd is
0.056 for two gradient evaluations against 0.054 for ONE plain draw (0.076 for
two). Plain draws are cheap here (vmap over M: about 0.3 s for M = 50,000 at the
largest shapes), so the power comes from M = 50,000: with M = 2,000, eps * 1.02
has |bias|/se of about 2.4 there, under zcrit = 4.66, and passes. Bonferroni is
kept rather than a joint T^2 test: the gradient coordinates are linear images of
a few eps monomials, so their covariance is rank-deficient, and the bias sits in
the same few directions that dominate a single coordinate's noise.
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
M = 50_000  # reparameterized gradient samples per check
M_SCORE = 2000  # REINFORCE gradient samples per check
ABS_FLOOR = 1e-9  # rounding slack for coordinates whose estimator is (near) deterministic
POWER_MARGIN = 4.0  # a control's |bias|/se exceeds zcrit by this much: missed with probability <= Phi(-4)

# The negative controls: each is an estimator whose expectation differs from the true gradient.
MUTANTS = {
    "eps*1.02": {"std_factor": 1.02},
    "eps*1.05": {"std_factor": 1.05},
    "eps*1.10": {"std_factor": 1.10},
    "kl(logvar.detach())": {"kl_logvar_detached": True},
}


def linear_gaussian(d: int, z: int, seed: int, enc_scale: float, dec_scale: float, b: int):
    """Linear-Gaussian VAE params (init's draws, rescaled) and (b, d) N(0, 1) data, float64."""
    params = vaefunc.VAE((d,), latent_dim=z, hidden=()).init(seed, dtype=torch.float64)
    params = {k: v * (enc_scale if k.startswith("encoder") else dec_scale) for k, v in params.items()}
    x = S.randn(seed + 1, b, d)
    return params, x


def expected_elbo(params: dict, x: torch.Tensor, *, std_factor: float = 1.0,
                  kl_logvar_detached: bool = False) -> torch.Tensor:  # fmt: skip
    """Closed-form batch mean of E_q[ELBO], from the weights alone (no vaefunc maths).

    ``std_factor`` c gives the expectation of the estimator that samples z with
    std c * s, and ``kl_logvar_detached`` that of the estimator whose KL term
    sees logvar as a constant (used to get the exact bias of the negative controls).
    """
    we, be = params["encoder.0.weight"], params["encoder.0.bias"]
    w, b = params["decoder.0.weight"], params["decoder.0.bias"]
    z = w.shape[1]
    h = x @ we.T + be
    mu, logvar = h[:, :z], h[:, z:]
    resid = (x - mu @ w.T - b).square().sum(-1)
    spread = (std_factor**2 * logvar.exp() * w.square().sum(0)).sum(-1)  # sum_j c^2 s_j^2 ||W_j||^2
    rec = -0.5 * (resid + spread) - 0.5 * x.shape[1] * math.log(2 * math.pi)
    lv = logvar.detach() if kl_logvar_detached else logvar
    kl = 0.5 * (mu.square() + lv.exp() - 1.0 - lv).sum(-1)
    return (rec - kl).mean()


def gaussian_spec(params: dict) -> vaefunc.VAE:
    """The spec of linear_gaussian's params: their shapes, and the Gaussian likelihood with obs_std 1."""
    return vaefunc.VAE.from_params(params, likelihood="gaussian")


def reparam_grads(params: dict, x: torch.Tensor, eps: torch.Tensor, *, std_factor: float = 1.0,
                  kl_logvar_detached: bool = False) -> dict:  # fmt: skip
    """Gradients of the single-sample ELBO (batch mean), one per eps draw: eps (m, b, z) -> (m, ...).

    ``std_factor`` != 1 is the deliberately biased estimator z = mu + c * s * eps;
    ``kl_logvar_detached`` the one that stops the gradient through the KL's logvar
    (same value, wrong gradient).
    """

    model = gaussian_spec(params)

    def single(p, e):
        if not kl_logvar_detached:
            return model.elbo(p, x, std_factor * e).mean()
        return elbo_kl_logvar_detached(p, x, std_factor * e).mean()

    return vmap(grad(single), in_dims=(None, 0))(params, eps)


def elbo_kl_logvar_detached(params: dict, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """VAE.elbo (Gaussian likelihood) rebuilt from its parts, with the KL seeing logvar.detach(): (b,)."""
    model = gaussian_spec(params)
    mu, logvar = model.encode(params, x)
    rec = vaefunc.gaussian_log_prob(model.decode(params, model.reparameterize(mu, logvar, eps)), x)
    return rec - vaefunc.kl_normal(mu, logvar.detach())


def score_grads(params: dict, x: torch.Tensor, eps: torch.Tensor) -> dict:
    """REINFORCE gradients of the ELBO w.r.t. the encoder, one per eps draw: (m, ...).

    grad_phi E_q[log p(x|z)] = E_q[log p(x|z) grad_phi log q(z|x)], with z and
    log p(x|z) computed outside the differentiated function (constants to it);
    the KL's gradient is exact, as in the reparameterized estimator.
    """
    model = gaussian_spec(params)
    with torch.no_grad():
        mu, logvar = model.encode(params, x)
        zs = model.reparameterize(mu, logvar, eps)  # (m, b, z)
        rec = vaefunc.gaussian_log_prob(model.decode(params, zs), x)  # (m, b)
    enc = {k: v for k, v in params.items() if k.startswith("encoder")}

    def surrogate(p, z_sample, f):
        mu, logvar = model.encode(p, x)
        log_q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(z_sample).sum(-1)
        return (f * log_q - vaefunc.kl_normal(mu, logvar)).mean()

    return vmap(grad(surrogate), in_dims=(None, 0, 0))(enc, zs, rec)


def zcrit(n_coords: int, alpha: float = ALPHA) -> float:
    """Two-sided Bonferroni critical value: P(any |Z_k| > zcrit) <= alpha over n_coords."""
    return float(norm.isf(alpha / (2 * n_coords)))


def error_scale(s: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The check's unit per coordinate: standard error of the mean of samples s (m, ...) + rounding floor."""
    return s.std(0, correction=1) / math.sqrt(s.shape[0]) + ABS_FLOOR * (1 + target.abs())


def standardized_errors(samples: dict, target: dict) -> dict:
    """|mean - target| / (standard error + floor), per coordinate."""
    return {k: (s.mean(0) - target[k]).abs() / error_scale(s, target[k]) for k, s in samples.items()}


def agrees_in_expectation(samples: dict, target: dict, alpha: float = ALPHA) -> tuple[bool, float, float]:
    """(every coordinate within zcrit standard errors, worst standardized error, zcrit)."""
    errs = standardized_errors(samples, target)
    k = sum(e.numel() for e in errs.values())
    worst = max(float(e.max()) for e in errs.values())
    zc = zcrit(k, alpha)
    return worst <= zc, worst, zc


def fixed_eps(m: int, b: int, z: int) -> torch.Tensor:
    return S.randn(EPS_SEED, m, b, z)


def control_setting():
    """The negative controls' model: d = 4, z = 2, b = 6 and scales inside the strategies' ranges,
    with the logvar biases raised by 1.5 (s^2 about 4.5 times larger), so the s^2 ||W_j||^2 term,
    where a wrong noise scale shows, dominates, and exp(logvar) - 1, the KL's logvar gradient, is far from 0."""
    params, x = linear_gaussian(4, 2, seed=7, enc_scale=1.0, dec_scale=1.5, b=6)
    params["encoder.0.bias"] = params["encoder.0.bias"] + torch.tensor([0.0, 0.0, 1.5, 1.5], dtype=torch.float64)
    return params, x


@given(
    b=S.batch_sizes,
    d=S.data_dims,
    z=S.latent_dims,
    seed=S.seeds.filter(lambda s: s < 2**32 - 2),
    enc_scale=S.scales,
    dec_scale=S.scales,
)
def test_reparameterized_gradient_is_unbiased(b, d, z, seed, enc_scale, dec_scale):
    """M = 50,000 samples from the fixed eps seed; the false-alarm rate is ALPHA = 1e-4 per example
    (two-sided, Bonferroni over every coordinate, normal approximation of each mean).

    Calibration, measured once over 400 random settings from these strategies with random eps
    seeds: the Bonferroni-adjusted p-value was <= 1e-3, 1e-2, 5e-2 in 0, 1, 8 cases (nominal at
    most 0.4, 4, 20): conservative, as Bonferroni over correlated coordinates is.
    """
    params, x = linear_gaussian(d, z, seed, enc_scale, dec_scale, b)
    mu, logvar = gaussian_spec(params).encode(params, x)
    assume(bool((logvar.abs() < 15).all()))  # stay clear of encode's clamp, where the closed form differs
    exact = grad(expected_elbo)(params, x)
    samples = reparam_grads(params, x, fixed_eps(M, b, z))
    ok, worst, zc = agrees_in_expectation(samples, exact)
    assert ok, f"a coordinate's mean gradient is {worst:.2f} standard errors from the exact one (zcrit {zc:.2f})"


@pytest.mark.parametrize("mutant", MUTANTS)
def test_biased_estimators_fail_the_same_check(mutant):
    """Negative controls: eps scaled by 1.02, 1.05, 1.10, and the KL computed on logvar.detach().
    Each goes through the check of the property test above (same M, eps seed, ALPHA) and must fail it.

    Power: each mutant's expectation is known exactly (``expected_elbo`` with the same
    mutation), so its bias per coordinate is known. If some coordinate has
    |bias| / (se + floor) >= zcrit + 4, that coordinate alone exceeds zcrit unless its
    noise is 4 units against the bias: probability <= Phi(-4) = 3.2e-5. Measured on
    ``control_setting()`` (K = 32 coordinates, zcrit = 4.66, so zcrit + 4 = 8.66), the best
    coordinate's |bias|/se is about 11.5 (eps*1.02), 27.7 (eps*1.05), 51.8 (eps*1.10) and
    174 (kl(logvar.detach())): a miss has probability below Phi(4.66 - 11.5) = 4e-12.
    """
    mutation = MUTANTS[mutant]
    params, x = control_setting()
    b, z = x.shape[0], params["decoder.0.weight"].shape[1]
    exact = grad(expected_elbo)(params, x)
    biased_mean = grad(lambda p, xx: expected_elbo(p, xx, **mutation))(params, x)
    samples = reparam_grads(params, x, fixed_eps(M, b, z), **mutation)

    zc = zcrit(sum(v.numel() for v in exact.values()))
    power = max(float(((biased_mean[k] - exact[k]).abs() / error_scale(samples[k], exact[k])).max()) for k in exact)
    assert power >= zc + POWER_MARGIN, f"the control lacks power: best |bias|/se {power:.1f} < {zc + POWER_MARGIN:.2f}"

    ok, worst, zc = agrees_in_expectation(samples, exact)
    assert not ok, f"{mutant} passed (worst {worst:.2f} <= zcrit {zc:.2f})"
    # ... and the same samples agree with the mutant's own exact expectation (the bias is what we think).
    assert agrees_in_expectation(samples, biased_mean)[0]


def test_stop_gradient_mutant_changes_the_gradient_not_the_value():
    """The kl(logvar.detach()) control computes the same ELBO as vaefunc.elbo; only its gradient differs."""
    params, x = control_setting()
    eps = fixed_eps(1, x.shape[0], 2)[0]
    same_value = gaussian_spec(params).elbo(params, x, eps)
    torch.testing.assert_close(elbo_kl_logvar_detached(params, x, eps), same_value, rtol=0, atol=0)
    right = reparam_grads(params, x, eps[None])
    wrong = reparam_grads(params, x, eps[None], kl_logvar_detached=True)
    assert not torch.allclose(right["encoder.0.bias"], wrong["encoder.0.bias"])


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
    _, logvar = gaussian_spec(params).encode(params, x)
    assume(bool((logvar.abs() < 15).all()))
    eps = fixed_eps(M_SCORE, b, z)
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
    model = gaussian_spec(params)
    vals = vmap(lambda e: model.elbo(params, x, e).mean())(eps)
    se = float(vals.std()) / math.sqrt(m)
    gap = abs(float(vals.mean()) - float(expected_elbo(params, x, std_factor=std_factor)))
    assert gap <= zcrit(1) * se, f"{gap:.3g} > {zcrit(1):.2f} * {se:.3g}"
