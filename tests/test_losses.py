"""losses.py: the closed-form KL, the log-likelihoods and the ELBO, against
torch.distributions, Monte Carlo, a batched nn.Module formula and autograd."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import norm
from torch.distributions import Bernoulli, Normal
from torch.func import functional_call, grad, vmap

import vaefunc
from vaefunc.losses import example_terms
from tests import oracles
from tests import strategies as S

F64 = torch.float64


# ----------------------------------------------------------------------------- KL


@given(b=S.batch_sizes, z=S.latent_dims, seed=S.seeds, scale=S.scales)
def test_kl_equals_torch_distributions(b, z, seed, scale):
    mu, logvar = S.randn(seed, b, z, scale=scale), S.randn(seed ^ 0x5EED, b, z, scale=scale)
    torch.testing.assert_close(vaefunc.kl_normal(mu, logvar), oracles.kl_normal(mu, logvar), rtol=1e-12, atol=1e-12)


@given(b=S.batch_sizes, z=S.latent_dims, seed=S.seeds, scale=st.floats(0.0, 10.0))
def test_kl_is_non_negative(b, z, seed, scale):
    mu, logvar = S.randn(seed, b, z, scale=scale), S.randn(seed ^ 1, b, z, scale=scale)
    kl = vaefunc.kl_normal(mu, logvar)
    assert kl.shape == (b,)
    assert bool((kl >= 0).all())


def test_kl_is_exactly_zero_at_the_prior():
    for dtype in (torch.float32, F64):
        kl = vaefunc.kl_normal(torch.zeros(3, 5, dtype=dtype), torch.zeros(3, 5, dtype=dtype))
        assert torch.equal(kl, torch.zeros(3, dtype=dtype))


def _kl_mc_check(kl_fn, m: int = 200_000) -> tuple[float, float]:
    """(|MC mean - kl_fn|, zcrit * se) for one fixed posterior; two-sided false alarm 1e-4."""
    mu = torch.tensor([0.5, -1.0, 0.0], dtype=F64)
    logvar = torch.tensor([0.3, -0.7, 1.2], dtype=F64)
    q = Normal(mu, torch.exp(0.5 * logvar))
    z = vaefunc.VAE.reparameterize(mu, logvar, S.randn(1234, m, 3))  # fixed seed
    log_ratio = (q.log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum(-1)  # (m,), E = KL
    se = float(log_ratio.std()) / math.sqrt(m)
    return abs(float(log_ratio.mean()) - float(kl_fn(mu, logvar))), float(norm.isf(1e-4 / 2)) * se


def test_kl_equals_a_monte_carlo_estimate_within_its_standard_error():
    gap, tol = _kl_mc_check(vaefunc.kl_normal)
    assert gap <= tol, f"{gap:.3g} > {tol:.3g}"


def test_kl_monte_carlo_check_has_power():
    """Negative control: a KL that forgets the -1 (off by z/2 = 1.5 nats here) fails it."""
    gap, tol = _kl_mc_check(lambda mu, lv: 0.5 * (mu.square() + lv.exp() - lv).sum(-1))
    assert gap > tol


def test_kl_gradcheck():
    mu = S.randn(0, 3, 4).requires_grad_()
    logvar = S.randn(1, 3, 4).requires_grad_()
    assert torch.autograd.gradcheck(vaefunc.kl_normal, (mu, logvar))
    assert torch.autograd.gradgradcheck(vaefunc.kl_normal, (mu, logvar))


# ------------------------------------------------------------------ log-likelihoods


@given(b=S.batch_sizes, d=S.data_dims, seed=S.seeds, scale=st.floats(0.1, 50.0))
def test_bernoulli_log_prob_equals_torch_distributions(b, d, seed, scale):
    logits = S.randn(seed, b, d, scale=scale)
    x = (S.rand(seed ^ 7, b, d) > 0.5).to(F64)
    torch.testing.assert_close(
        vaefunc.bernoulli_log_prob(logits, x), Bernoulli(logits=logits).log_prob(x).sum(-1), rtol=1e-12, atol=1e-12
    )


def test_bernoulli_log_prob_is_finite_for_extreme_logits():
    """From logits, never log(sigmoid): logits of +-1e4 give exact, finite answers in float32."""
    logits = torch.tensor([[1e4, -1e4, 1e4, -1e4]])
    x = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    out = vaefunc.bernoulli_log_prob(logits, x)
    torch.testing.assert_close(out, torch.tensor([-2e4]))
    g = torch.func.grad(lambda lg: vaefunc.bernoulli_log_prob(lg, x).sum())(logits)
    assert bool(torch.isfinite(g).all())


def test_bernoulli_log_prob_of_intensities_is_the_cross_entropy():
    logits, x = S.randn(0, 4, 6), S.rand(1, 4, 6)
    expected = (x * F.logsigmoid(logits) + (1 - x) * F.logsigmoid(-logits)).sum(-1)
    torch.testing.assert_close(vaefunc.bernoulli_log_prob(logits, x), expected, rtol=1e-12, atol=1e-12)


@given(b=S.batch_sizes, d=S.data_dims, seed=S.seeds, obs_std=st.floats(0.05, 5.0))
def test_gaussian_log_prob_equals_torch_distributions(b, d, seed, obs_std):
    mean, x = S.randn(seed, b, d), S.randn(seed ^ 3, b, d)
    expected = Normal(mean, torch.full_like(mean, obs_std)).log_prob(x).sum(-1)
    torch.testing.assert_close(vaefunc.gaussian_log_prob(mean, x, obs_std), expected, rtol=1e-12, atol=1e-12)
    # The default is unit variance, normalising constant included.
    torch.testing.assert_close(
        vaefunc.gaussian_log_prob(mean, x),
        -0.5 * (x - mean).square().sum(-1) + oracles.gaussian_log_norm(d),
        rtol=1e-12,
        atol=1e-12,
    )


# ------------------------------------------------------------------------- the ELBO


def _vae(shape, seed, likelihood, b, dtype=F64, obs_std=1.0):
    d, z, hidden = shape
    model = vaefunc.VAE((d,), latent_dim=z, hidden=hidden, likelihood=likelihood, obs_std=obs_std)
    params = model.init(seed, dtype=dtype)
    x = S.data_for(likelihood, seed ^ 11, b, d, dtype=dtype)
    eps = S.randn(seed ^ 13, b, z, dtype=dtype)
    return model, params, x, eps


@given(shape=S.vae_shapes(), b=S.batch_sizes, seed=S.seeds, likelihood=S.likelihoods, beta=st.floats(0.0, 4.0))
def test_elbo_via_vmap_equals_the_batched_formula(shape, b, seed, likelihood, beta):
    model, params, x, eps = _vae(shape, seed, likelihood, b, obs_std=0.7)
    got = model.elbo(params, x, eps, beta=beta)
    expected = oracles.batched_elbo(params, x, eps, beta=beta, likelihood=likelihood, obs_std=0.7)
    assert got.shape == (b,)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@given(shape=S.vae_shapes(), b=S.batch_sizes, seed=S.seeds, likelihood=S.likelihoods)
def test_functional_gradients_equal_the_module_gradients(shape, b, seed, likelihood):
    """grad of vaefunc.elbo == autograd through the nn.Module oracle, on the same dict."""
    model, params, x, eps = _vae(shape, seed, likelihood, b)
    d, z, hidden = shape
    module = oracles.VAE(d, z, hidden).to(F64)

    def module_loss(p):
        rec, kl = functional_call(module, p, (x, eps), {"likelihood": likelihood})
        return (rec - kl).sum()

    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    expected = dict(zip(leaves, torch.autograd.grad(module_loss(leaves), list(leaves.values()))))
    got = grad(lambda p: model.elbo(p, x, eps).sum())(params)
    assert list(got) == list(params)
    for k in params:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-10, atol=1e-12)


@given(shape=S.vae_shapes(), b=S.batch_sizes, seed=S.seeds, likelihood=S.likelihoods)
def test_vmap_per_example_gradients_equal_a_loop(shape, b, seed, likelihood):
    model, params, x, eps = _vae(shape, seed, likelihood, b)

    def one(p, xi, ei):
        rec, kl = example_terms(model, p, xi, ei)
        return rec - kl

    batched = vmap(grad(one), in_dims=(None, 0, 0))(params, x, eps)
    for i in range(b):
        single = grad(one)(params, x[i], eps[i])
        for k in params:
            torch.testing.assert_close(batched[k][i], single[k], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_elbo_gradcheck(likelihood):
    model, params, x, eps = _vae((3, 2, (4,)), 0, likelihood, 2, obs_std=0.8)
    keys = list(params)

    def fn(*leaves):
        return model.elbo(dict(zip(keys, leaves)), x, eps, beta=0.5)

    leaves = tuple(params[k].clone().requires_grad_() for k in keys)
    assert torch.autograd.gradcheck(fn, leaves)


def test_elbo_accepts_unflattened_examples_and_tensor_beta():
    model = vaefunc.VAE((1, 2, 3), latent_dim=2, hidden=(4,))
    params = model.init(0, dtype=F64)
    x, eps = S.rand(0, 5, 1, 2, 3), S.randn(1, 5, 2)
    flat = model.elbo(params, x.reshape(5, 6), eps, beta=0.3)
    torch.testing.assert_close(model.elbo(params, x, eps, beta=torch.tensor(0.3, dtype=F64)), flat)
    rec, kl = model.elbo_terms(params, x, eps)
    torch.testing.assert_close(flat, rec - 0.3 * kl)


def test_elbo_rejects_an_unknown_likelihood():
    with pytest.raises(ValueError, match=r"likelihood must be one of .*'bernoulli'.*got 'poisson'"):
        vaefunc.VAE((3,), latent_dim=2, hidden=(), likelihood="poisson")


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_the_loss_is_minus_the_beta_weighted_mean(likelihood):
    model, params, x, eps = _vae((5, 3, (4,)), 2, likelihood, 6, obs_std=1.5)
    beta = torch.tensor(0.25, dtype=F64)
    loss, metrics = model.loss()(params, x, eps, beta, torch.zeros_like(beta))
    rec, kl = model.elbo_terms(params, x, eps)
    assert loss.shape == () and set(metrics) == {"recon", "kl", "elbo"}
    expected = -model.elbo(params, x, eps, beta=beta).mean()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(metrics["recon"], rec.mean())
    torch.testing.assert_close(metrics["kl"], kl.mean())
    torch.testing.assert_close(metrics["elbo"], (rec - kl).mean())


# ------------------------------------------------------------- batched terms


def _custom_conv():
    from tests.test_custom import conv_model

    return conv_model()


BATCHED_SPECS = {
    "mlp": lambda: vaefunc.VAE((6,), latent_dim=3, hidden=(5, 4)),
    "conv": lambda: vaefunc.VAE((1, 8, 8), latent_dim=3, hidden=(5,), arch="conv", channels=(4, 4)),
    "custom_conv": _custom_conv,
    "conditional": lambda: vaefunc.VAE((6,), latent_dim=3, hidden=(5,), n_classes=3),
    "gaussian_pixel": lambda: vaefunc.VAE((6,), latent_dim=3, hidden=(5,), likelihood="gaussian",
                                          learn_obs_std="pixel"),
    "continuous_bernoulli": lambda: vaefunc.VAE((6,), latent_dim=3, hidden=(5,), likelihood="continuous_bernoulli"),
    "mog": lambda: vaefunc.VAE((6,), latent_dim=3, hidden=(5,), prior="mog", prior_components=4),
    "vamp": lambda: vaefunc.VAE((6,), latent_dim=3, hidden=(5,), prior="vamp", prior_components=4),
    "iaf": lambda: vaefunc.VAE((6,), latent_dim=3, hidden=(5,), posterior="iaf"),
    "two_layer": lambda: vaefunc.VAE((6,), latent_dim=3, hidden=(5,), top_latent_dim=2),
}


def _batched_inputs(model, b=7):
    params = model.init(3, dtype=F64)
    x = S.data_for(model.likelihood, 5, b, model.data_dim, dtype=F64).reshape(b, *model.input_shape)
    eps = S.randn(6, b, model.noise_dim, dtype=F64)
    y = F.one_hot(torch.arange(b) % model.n_classes, model.n_classes).to(F64) if model.n_classes else None
    return params, x, eps, y


@pytest.mark.parametrize("name", sorted(BATCHED_SPECS))
@pytest.mark.parametrize("options", [{}, {"kl": "mc"}, {"stop_q": True}, {"per_dim": True}], ids=str)
def test_batched_terms_equal_the_vmapped_example_terms(name, options):
    """single_sample_terms runs the batch through each layer at once; it must be the same function
    as vmap(example_terms), the JAX-style definition, for every network, density and option."""
    model = BATCHED_SPECS[name]()
    if options.get("per_dim") and not model.closed_form_kl:
        pytest.skip("per_dim needs a closed-form KL")
    if options.get("stop_q") and model.flow_steps:
        pytest.skip("stop_q needs q(z|x)'s density at a point, which an IAF does not give")
    params, x, eps, y = _batched_inputs(model)

    def one(x, e, y):
        return example_terms(model, params, x, e, y, **options)

    want = vmap(one, in_dims=(0, 0, None if y is None else 0))(x, eps, y)
    got = vaefunc.losses.single_sample_terms(model, params, x, eps, y, **options)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_batched_terms_have_power_against_a_shuffled_batch():
    """Negative control: pairing each example with another example's noise must be caught."""
    model = BATCHED_SPECS["mlp"]()
    params, x, eps, _ = _batched_inputs(model)
    want = vmap(lambda x, e: example_terms(model, params, x, e))(x, eps)
    got = vaefunc.losses.single_sample_terms(model, params, x, eps.roll(1, 0))
    with pytest.raises(AssertionError):
        torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-12)


def test_batched_terms_reject_a_batch_that_does_not_match_the_noise():
    model = BATCHED_SPECS["mlp"]()
    params, x, eps, _ = _batched_inputs(model)
    expected = r"expected x of 6 examples .* 6 features each; got a tensor of shape \(7, 6\)"
    with pytest.raises(ValueError, match=expected):
        vaefunc.losses.single_sample_terms(model, params, x, eps[:6])
    with pytest.raises(ValueError, match=r"got a tensor of shape \(7, 5\)"):
        vaefunc.losses.single_sample_terms(model, params, x[:, :5], eps)
