"""The IWAE bound and the log-likelihood estimate, on a model whose log p(x) is known.

The linear-Gaussian VAE (``hidden=()``, Gaussian likelihood with std sigma) has
the marginal x ~ N(b, W W^T + sigma^2 I) in closed form, and, when the columns of
W are orthogonal, a diagonal exact posterior that a linear encoder can express.

Statistical assertions use fixed seeds, float64 and a threshold of 4 standard
errors: the false-alarm rate of each is P(|N(0, 1)| > 4) = 6.3e-5 (3.2e-5 for a
one-sided check). Each has a negative control that must fail the same check.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

import vaefunc
from vaefunc import estimators

Z_CRIT = 4.0
D, ZDIM, SIGMA, N = 5, 2, 0.5, 200
F64 = torch.float64
LINEAR = vaefunc.VAE((D,), latent_dim=ZDIM, hidden=(), likelihood="gaussian", obs_std=SIGMA)
"""The linear-Gaussian VAE: x = W z + b + noise of standard deviation SIGMA."""
PLAIN = vaefunc.VAE((12,), latent_dim=3, hidden=(7,))


def _linear_gaussian(seed: int = 0, *, mu_shift: float = 0.0, var_scale: float = 1.0):
    """params of the linear-Gaussian VAE with its exact posterior as the encoder
    (mu shifted by ``mu_shift`` and variance scaled by ``var_scale`` when asked),
    and the exact marginal of x."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=gen, dtype=F64))
    w = q[:, :ZDIM] * torch.tensor([1.5, 0.8], dtype=F64)  # orthogonal columns: W^T W diagonal
    b = torch.randn(D, generator=gen, dtype=F64)
    post_var = 1.0 / (1.0 + (w * w).sum(0) / SIGMA**2)  # diag of (I + W^T W / sigma^2)^-1
    a = post_var[:, None] * w.T / SIGMA**2  # posterior mean = a (x - b)
    params = LINEAR.init(seed, dtype=F64)
    params["decoder.0.weight"], params["decoder.0.bias"] = w.clone(), b.clone()
    params["encoder.0.weight"] = torch.cat([a, torch.zeros(ZDIM, D, dtype=F64)])
    params["encoder.0.bias"] = torch.cat([-a @ b + mu_shift, torch.log(post_var * var_scale)])
    marginal = MultivariateNormal(b, w @ w.T + SIGMA**2 * torch.eye(D, dtype=F64))
    return params, marginal


def _exact_elbo(params, x):
    """E_q[log p(x|z)] - KL(q || N(0, I)) in closed form for the linear-Gaussian model."""
    w, b = params["decoder.0.weight"], params["decoder.0.bias"]
    mu, logvar = LINEAR.encode(params, x)
    sq = (x - mu @ w.T - b).square().sum(-1) + (logvar.exp() * (w * w).sum(0)).sum(-1)
    rec = -0.5 * sq / SIGMA**2 - D * math.log(SIGMA) - 0.5 * D * math.log(2 * math.pi)
    return rec - vaefunc.kl_normal(mu, logvar)


def _ll(params, x, k, seed=0):
    return LINEAR.log_likelihood(params, x, k=k, seed=seed, progress=False)


@pytest.fixture(scope="module")
def perturbed():
    """A linear-Gaussian model with a wrong (shifted, wider) encoder and N data points."""
    params, marginal = _linear_gaussian(mu_shift=0.8, var_scale=1.6)
    x = _sample(marginal)
    return params, x, marginal.log_prob(x)


def _sample(marginal):
    gen = torch.Generator().manual_seed(7)
    eps = torch.randn(N, D, generator=gen, dtype=F64)
    return marginal.loc + eps @ marginal.scale_tril.T


def _se(v: torch.Tensor) -> float:
    return float(v.std() / math.sqrt(v.numel()))


def test_iwae_with_one_sample_is_the_elbo_with_the_monte_carlo_kl():
    model = vaefunc.VAE((12,), latent_dim=3, hidden=(7,))
    params = model.init(1, dtype=F64)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 12, generator=gen, dtype=F64)
    eps = torch.randn(1, 6, 3, generator=gen, dtype=F64)
    got = model.iwae(params, x, eps)
    torch.testing.assert_close(got, model.elbo(params, x, eps[0], kl="mc"), rtol=1e-12, atol=1e-12)
    # ... whose expectation is the closed-form ELBO; the two differ for one sample.
    assert not torch.allclose(got, model.elbo(params, x, eps[0]))


def test_iwae_is_a_logsumexp_of_the_log_weights_and_stable():
    params = PLAIN.init(1, dtype=F64)
    gen = torch.Generator().manual_seed(0)
    x, eps = torch.rand(4, 12, generator=gen, dtype=F64), torch.randn(9, 4, 3, generator=gen, dtype=F64)
    lw = PLAIN.log_weights(params, x, eps)  # (k, b)
    assert lw.shape == (9, 4)
    torch.testing.assert_close(PLAIN.iwae(params, x, eps), torch.log(torch.exp(lw).mean(0)))
    # Far below exp's range (log w ~ -1e5 nats) the bound stays finite: logsumexp, not exp then log.
    params["decoder.2.bias"] = params["decoder.2.bias"] + 3e4
    assert torch.isfinite(PLAIN.iwae(params, x, eps)).all()


def test_iwae_rejects_eps_of_the_wrong_shape():
    model = vaefunc.VAE((12,), latent_dim=3, hidden=())
    with pytest.raises(ValueError, match=r"\(k, b, z\)"):
        model.iwae(model.init(), torch.rand(4, 12), torch.randn(4, 3))


def test_log_likelihood_is_exact_with_the_exact_posterior():
    # With q(z|x) = p(z|x) every weight equals p(x): one sample gives log p(x) exactly,
    # which checks every normalising constant of log p(x|z) + log p(z) - log q(z|x).
    params, marginal = _linear_gaussian()
    x = _sample(marginal)[:20]
    torch.testing.assert_close(_ll(params, x, k=1), marginal.log_prob(x), rtol=1e-10, atol=1e-10)


def test_log_likelihood_converges_to_the_exact_marginal(perturbed):
    params, x, exact = perturbed
    ks = (1, 3, 10, 100, 3000)
    gaps = [exact - _ll(params, x, k) for k in ks]  # log p(x) - estimate, per example
    # Jensen: below log p(x) in expectation for small k ...
    for k, gap in zip(ks[:3], gaps[:3]):
        assert float(gap.mean()) > Z_CRIT * _se(gap), (k, float(gap.mean()), _se(gap))
    # ... the error shrinks as k grows ...
    rms = [float(g.square().mean().sqrt()) for g in gaps]
    assert all(a > b for a, b in zip(rms, rms[1:])), rms
    # ... and at large k the estimate equals log p(x) within its standard error.
    assert abs(float(gaps[-1].mean())) < Z_CRIT * _se(gaps[-1]), (float(gaps[-1].mean()), _se(gaps[-1]))


def test_convergence_check_has_power_against_a_wrong_estimator(perturbed):
    # Negative control: averaging the log weights (the Monte Carlo ELBO) instead of
    # log-averaging them fails the large-k check above.
    params, x, exact = perturbed
    eps = torch.randn(3000, N, ZDIM, generator=torch.Generator().manual_seed(0), dtype=F64)
    wrong = LINEAR.log_weights(params, x, eps).mean(0)
    gap = exact - wrong
    assert abs(float(gap.mean())) > Z_CRIT * _se(gap)


def test_log_likelihood_is_at_least_the_elbo_on_average(perturbed):
    params, x, _ = perturbed
    diff = _ll(params, x, k=10) - _exact_elbo(params, x)
    assert float(diff.mean()) > Z_CRIT * _se(diff)
    # and with k=1 it is the ELBO in expectation (no significant difference either way)
    diff1 = _ll(params, x, k=1) - _exact_elbo(params, x)
    assert abs(float(diff1.mean())) < Z_CRIT * _se(diff1)


def test_log_likelihood_memory_is_bounded_by_chunks(monkeypatch):
    shapes = []
    real = estimators.importance_terms  # what log_likelihood evaluates, chunk by chunk

    def spy(model, params, x, eps, labels=None):
        shapes.append(tuple(eps.shape))
        return real(model, params, x, eps, labels)

    monkeypatch.setattr(estimators, "importance_terms", spy)
    params = PLAIN.init()
    x = torch.rand(25, 12)
    out = PLAIN.log_likelihood(params, x, k=50, chunk=8, batch_size=10)
    assert out.shape == (25,) and torch.isfinite(out).all()
    assert max(s[0] * s[1] for s in shapes) <= 8 * 10
    assert sum(s[0] for s in shapes if s[1] == 10) == 2 * 50  # every sample of both full batches
    assert not out.requires_grad


def test_log_likelihood_is_deterministic_by_seed_and_checks_input():
    params = PLAIN.init()
    x = torch.rand(5, 12)
    a, b, c = (PLAIN.log_likelihood(params, x, k=20, seed=s) for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    for bad in (dict(k=0), dict(chunk=0), dict(batch_size=0), dict(seed=-1)):
        with pytest.raises(ValueError):
            PLAIN.log_likelihood(params, x, **bad)


# Inductor's own import of torch.jit warns on torch 2.13; that is torch's, not ours.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.compile
def test_compiled_chunks_equal_eager_and_compile_once():
    """compile=True: every full chunk (batch_size examples x chunk samples) runs one compiled function,
    the partial batch and the partial chunk run eagerly, and the estimate equals the eager one to
    rounding (the same eps); a second call, a new seed or new digits never recompile."""
    torch._dynamo.reset()
    params = PLAIN.init(1)
    x = torch.rand(7, 12, generator=torch.Generator().manual_seed(0))
    kw = dict(k=10, chunk=4, batch_size=3, autocast=None)  # batches 3, 3, 1; chunks 4, 4, 2
    eager = PLAIN.log_likelihood(params, x, compile=False, **kw)
    compiled = PLAIN.log_likelihood(params, x, compile=True, **kw)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-5)
    with torch.compiler.set_stance("fail_on_recompile"):
        again = PLAIN.log_likelihood(params, torch.rand(7, 12), compile=True, seed=3, **kw)
    assert again.shape == (7,) and torch.isfinite(again).all()


def test_bf16_chunks_keep_the_estimate_in_float32():
    """autocast="bf16" (eager here): the matmuls in bf16, the log weights and their logsumexp in
    float32: the estimate is float32 and moves by far less than its Monte Carlo error."""
    params = PLAIN.init(1)
    x = torch.rand(6, 12, generator=torch.Generator().manual_seed(0))
    f32 = PLAIN.log_likelihood(params, x, k=200, compile=False, autocast=None)
    bf16 = PLAIN.log_likelihood(params, x, k=200, compile=False, autocast="bf16")
    other_seed = PLAIN.log_likelihood(params, x, k=200, compile=False, autocast=None, seed=1)
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, f32)  # autocast did run
    assert (bf16 - f32).abs().max() < 0.05 + (other_seed - f32).abs().max()
    assert (bf16 - f32).abs().max() < 0.05
    assert torch.equal(PLAIN.log_likelihood(params, x, k=200, compile=False), f32)  # "auto" is float32 when eager


def test_compile_auto_counts_the_estimates_work():
    from vaefunc.estimators import LL_AUTO_COMPILE_SECONDS, compiles_estimate

    model, cpu = vaefunc.VAE((784,), latent_dim=20, hidden=(400,)), torch.device("cpu")
    assert not compiles_estimate(model, 500, 1000, "auto", cpu)  # about 3 s of eager work
    assert compiles_estimate(model, 10_000, 5000, "auto", cpu)  # the test set at k = 5000: minutes
    assert not compiles_estimate(model, 10_000, 5000, "auto", torch.device("cuda"))  # not measured there
    assert compiles_estimate(model, 1, 1, True, cpu) and not compiles_estimate(model, 10**6, 10**4, False, cpu)
    assert LL_AUTO_COMPILE_SECONDS > 0
    params = model.init()
    for bad in ({"compile": "yes"}, {"compile": 1}, {"autocast": "fp8"}):
        with pytest.raises(ValueError, match="compile|autocast"):
            model.log_likelihood(params, torch.rand(2, 784), k=2, **bad)


def test_each_spec_compiles_its_chunks_in_a_cache_of_its_own():
    """Every spec gets its own code object, so Dynamo's per-code recompile limit (8) is never shared."""
    from vaefunc.estimators import _compiled_chunk

    fns = [_compiled_chunk(vaefunc.VAE((16,), latent_dim=z, hidden=(8,))) for z in (2, 3)]
    assert fns[0] is _compiled_chunk(vaefunc.VAE((16,), latent_dim=2, hidden=(8,)))  # cached by spec
    codes = [f._torchdynamo_orig_callable.__code__ for f in fns]
    assert codes[0] is not codes[1] and codes[0] is not estimators.chunk_log_mean_exp.__code__


def test_train_with_the_iwae_objective_lowers_its_loss():
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(256, 20, generator=gen) < torch.linspace(0.1, 0.9, 20)).float()
    params = vaefunc.VAE((20,), latent_dim=2, hidden=(16,)).init(0)
    result = vaefunc.train(params, x, epochs=4, batch_size=32, lr=1e-2, objective="iwae", k=5, progress=False, compile=False)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]
    # the reported loss is -iwae_5, which is tighter than the k-sample average ELBO
    assert result.history[-1]["loss"] <= -result.history[-1]["elbo"]
    with pytest.raises(ValueError, match="objective"):
        vaefunc.train(params, x, objective="vimco", progress=False)
    with pytest.raises(ValueError, match="iwae"):
        vaefunc.train(params, x, objective="iwae", beta=2.0, progress=False)


# ---------------------------------------------------------------- conditional VAEs and the activation


def _conditional(seed: int = 1):
    params = COND.init(seed, dtype=F64)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 12, generator=gen, dtype=F64)
    return params, x, torch.tensor([0, 1, 2, 3, 1, 0])


COND = vaefunc.VAE((12,), latent_dim=3, hidden=(7,), n_classes=4)
COND_TANH = vaefunc.VAE((12,), latent_dim=3, hidden=(7,), n_classes=4, activation="tanh")


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_conditional_iwae_with_one_sample_is_the_elbo_with_the_same_labels(activation):
    params, x, y = _conditional()
    model, other = (COND, COND_TANH) if activation == "relu" else (COND_TANH, COND)
    eps = torch.randn(1, 6, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    got = model.iwae(params, x, eps, y)
    ref = model.elbo(params, x, eps[0], y, kl="mc")
    torch.testing.assert_close(got, ref, rtol=0, atol=0)  # logsumexp of one term is that term
    # int labels and one-hot rows are the same input
    onehot = torch.nn.functional.one_hot(y, 4).to(F64)
    torch.testing.assert_close(model.iwae(params, x, eps, onehot), got, rtol=0, atol=0)
    # negative controls: another labelling, or the other activation, is another bound
    assert not torch.allclose(model.iwae(params, x, eps, (y + 1) % 4), got)
    assert not torch.allclose(other.iwae(params, x, eps, y), got)
    # with k samples it is the logsumexp of the labelled log weights
    eps5 = torch.randn(5, 6, 3, generator=torch.Generator().manual_seed(3), dtype=F64)
    lw = model.log_weights(params, x, eps5, y)
    torch.testing.assert_close(model.iwae(params, x, eps5, y), torch.logsumexp(lw, 0) - math.log(5))


def test_conditional_log_likelihood_batches_the_labels_with_the_examples():
    params, x, y = _conditional()
    kw = dict(k=40, chunk=40, batch_size=4)
    ll = COND.log_likelihood(params, x, y, **kw)
    # the same eps as log_likelihood draws them: one (k, b, z) block per batch of 4 examples
    gen = torch.Generator().manual_seed(0)
    ref = [COND.iwae(params, x[s : s + 4], torch.randn(40, len(x[s : s + 4]), 3, generator=gen, dtype=F64), y[s : s + 4])
           for s in (0, 4)]  # fmt: skip
    torch.testing.assert_close(ll, torch.cat(ref), rtol=1e-12, atol=1e-12)
    onehot = torch.nn.functional.one_hot(y, 4).to(F64)
    for same in (onehot, y.tolist(), y.numpy()):  # every label form gives the same numbers
        torch.testing.assert_close(COND.log_likelihood(params, x, same, **kw), ll, rtol=0, atol=0)
    assert not torch.allclose(COND.log_likelihood(params, x, (y + 1) % 4, **kw), ll)
    tanh = COND_TANH.log_likelihood(params, x, y, **kw)
    assert not torch.allclose(tanh, ll)


def test_labels_are_required_exactly_for_conditional_params():
    cond, x, y = _conditional()
    plain = PLAIN.init(dtype=F64)
    eps = torch.randn(2, 6, 3, dtype=F64)
    with pytest.raises(ValueError, match="conditional on 4 classes; pass labels y"):
        COND.iwae(cond, x, eps)
    with pytest.raises(ValueError, match="conditional on 4 classes; pass labels y"):
        COND.log_likelihood(cond, x, k=2)
    with pytest.raises(ValueError, match=r"unconditional \(n_classes=0\); got labels"):
        PLAIN.iwae(plain, x, eps, y)
    with pytest.raises(ValueError, match=r"unconditional \(n_classes=0\); got labels"):
        PLAIN.log_likelihood(plain, x, y, k=2)
    with pytest.raises(ValueError, match=r"integer labels must have shape \(6,\).*got \(3,\)"):
        COND.iwae(cond, x, eps, y[:3])
    with pytest.raises(ValueError, match=r"one-hot labels must have shape \(6, 4\).*got \(6, 3\)"):
        COND.iwae(cond, x, eps, torch.zeros(6, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        COND.log_likelihood(cond, x, y + 1, k=2)
