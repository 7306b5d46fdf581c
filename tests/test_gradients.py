"""Every gradient estimator is unbiased against an exact oracle, and each known way to break one is caught.

The oracle is the linear-Gaussian VAE (tests/linear_gaussian.py): the ELBO's
gradient in closed form, the expected IWAE bound's gradient for any k by
quadrature (float64, ~1e-14). A property test draws models, data, k and an
estimator; M = 4,000 estimates (one vmapped grad over M noise draws) give each
parameter's mean and standard error, and every z-score must lie within the
Bonferroni bound for a family-wise false-alarm rate of 1e-4 per drawn case
(z_crit = 4.4 to 4.7 for the 10 to 24 parameters): over 1,000 drawn cases
(``HYPOTHESIS_PROFILE=intense``) 0.1 false alarms are expected.

Negative controls (each must fail the same check, with its z-score printed):
the IWAE weights over k - 1 of the k samples, eps scaled by 1.01, DReG with
unsquared weights, DReG and STL without their stop-gradient (STL's is caught
by its defining property: zero variance at the exact posterior).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.func import grad, vmap

from linear_gaussian import F64, closed_form_elbo, exact_gradient, exact_posterior, model_of, near_posterior, random_params
from vaefunc import estimators, gradients

M = 4000
FAMILY_ALPHA = 1e-4
S = 0.7


def z_crit(n_params: int, alpha: float = FAMILY_ALPHA) -> float:
    """The two-sided Bonferroni bound: P(any |z_j| > z_crit) <= alpha over n_params normal z-scores."""
    return float(-torch.special.ndtri(torch.tensor(alpha / (2 * n_params), dtype=F64)))


def flat(tree: dict, prefix: str = "") -> torch.Tensor:
    """The leaves (with any leading draw axis kept) whose keys start with ``prefix``, as one vector: (..., P)."""
    keys = [k for k in sorted(tree) if k.startswith(prefix)]
    return torch.cat([tree[k].reshape(*tree[k].shape[: tree[k].ndim - _ndim(k)], -1) for k in keys], -1)


def _ndim(key: str) -> int:
    return 2 if key.endswith("weight") else 1


def estimates(bound_fn, params, x, eps, prefix: str = "") -> torch.Tensor:
    """Per-draw gradients of bound_fn(params, x, eps_i) (eps (M, ...)), flattened: (M, P)."""
    return flat(vmap(grad(bound_fn), in_dims=(None, None, 0))(params, x, eps), prefix)


def vaefunc_bound(model, objective: str, gradient: str):
    """The bound whose gradient is vaefunc's estimator: minus the training loss, for one example."""
    loss = model.loss(objective, gradient=gradient)
    one, zero = torch.tensor(1.0, dtype=F64), torch.tensor(0.0, dtype=F64)
    return lambda p, x, e: -loss(p, x[None], e, one, zero)[0]


def z_scores(samples: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    se = samples.std(0) / math.sqrt(samples.shape[0])
    return (samples.mean(0) - exact) / se.clamp(min=1e-300)


def draw_eps(objective: str, k: int, z: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (M, k, 1, z) if objective == "iwae" else (M, 1, z)
    return scale * torch.randn(shape, generator=g, dtype=F64)


def case(d: int, z: int, seed: int):
    params = near_posterior(d, z, seed, S)
    x = 1.5 * torch.randn(d, generator=torch.Generator().manual_seed(seed + 1), dtype=F64)
    return model_of(d, z, S), params, x


def exact(objective: str, params, x, k: int) -> torch.Tensor:
    if objective == "elbo":
        return flat(grad(lambda p: closed_form_elbo(p, x, S))(params))
    return flat(exact_gradient(params, x, k, S))


# ------------------------------------------------------------------ the oracle itself


@pytest.mark.parametrize("z", [1, 2])
def test_the_oracle_is_the_closed_form_elbo_at_k_1_and_the_monte_carlo_mean_at_k_5(z):
    model, params, x = case(3, z, seed=4)
    grid = {"n_eps": 121} if z == 2 else {}
    elbo = closed_form_elbo(params, x, S)
    from linear_gaussian import expected_iwae

    torch.testing.assert_close(expected_iwae(params, x, 1, S, **grid), elbo, rtol=0, atol=1e-11)
    for a, b in zip(flat(exact_gradient(params, x, 1, S, **grid)), exact("elbo", params, x, 1)):
        assert abs(float(a - b)) < 1e-10
    eps = torch.randn(200_000, 5, 1, z, generator=torch.Generator().manual_seed(0), dtype=F64)
    mc = vmap(lambda e: model.iwae(params, x[None], e))(eps)
    assert abs(float(mc.mean() - expected_iwae(params, x, 5, S, **grid))) < 4 * float(mc.std()) / math.sqrt(len(mc))


# ------------------------------------------------------------------ every estimator is unbiased


ESTIMATORS = [("elbo", "reparam"), ("elbo", "stl"), ("iwae", "reparam"), ("iwae", "dreg")]


@pytest.mark.parametrize("objective, gradient", ESTIMATORS)
@given(d=st.integers(1, 3), k=st.integers(2, 50), seed=st.integers(0, 10**6))
def test_every_estimator_is_unbiased(objective, gradient, d, k, seed):
    model, params, x = case(d, 1, seed)
    samples = estimates(vaefunc_bound(model, objective, gradient), params, x, draw_eps(objective, k, 1, seed))
    z = z_scores(samples, exact(objective, params, x, k))
    assert float(z.abs().max()) < z_crit(z.numel()), f"max |z| {float(z.abs().max()):.2f}"


@pytest.mark.parametrize("objective, gradient", ESTIMATORS)
def test_every_estimator_is_unbiased_with_two_latents(objective, gradient):
    model, params, x = case(2, 2, seed=11)
    k = 7
    samples = estimates(vaefunc_bound(model, objective, gradient), params, x, draw_eps(objective, k, 2, seed=3))
    exact_grad = exact(objective, params, x, k) if objective == "elbo" else flat(
        exact_gradient(params, x, k, S, n_eps=121))  # fmt: skip
    z = z_scores(samples, exact_grad)
    assert float(z.abs().max()) < z_crit(z.numel())


# ------------------------------------------------------------------ negative controls


def k_minus_one(model):
    """The IWAE weights over k - 1 of the k samples: the same shapes, E[iwae_(k-1)]'s gradient."""
    def bound(p, x, e):
        rec, kl = estimators.importance_terms(model, p, x[None], e)
        return (torch.logsumexp((rec - kl)[1:], 0) - math.log(e.shape[0] - 1)).mean()
    return bound


def dreg_mutant(model, *, squared: bool = True, stop: bool = True):
    """DReG with unsquared weights (the "IWAE-STL" estimator) or without the stop-gradient on q."""
    def bound(p, x, e):
        rec, kl = estimators.importance_terms(model, p, x[None], e, stop_q=stop)
        log_w = rec - kl
        cut_rec, cut_kl = estimators.importance_terms(model, gradients.cut_path(p), x[None], e)
        w = torch.softmax(log_w.detach(), 0)
        first = w.square() if squared else w
        return ((first * log_w + (w - first) * (cut_rec - cut_kl)).sum(0)).mean()
    return bound


MUTANTS = {  # name: (objective, the mutant's bound, eps scale, draws of M)
    "iwae over k-1 of the k weights": ("iwae", lambda m: k_minus_one(m), 1.0, 10),
    "iwae, eps x 1.01": ("iwae", lambda m: vaefunc_bound(m, "iwae", "reparam"), 1.01, 100),
    "elbo, eps x 1.01": ("elbo", lambda m: vaefunc_bound(m, "elbo", "reparam"), 1.01, 100),
    "dreg, weights not squared": ("iwae", lambda m: dreg_mutant(m, squared=False), 1.0, 10),
    "dreg, no stop-gradient on q": ("iwae", lambda m: dreg_mutant(m, stop=False), 1.0, 10),
}


def power_case():
    """The negative controls' model: d = 2, z = 1, its exact posterior perturbed by N(0, 0.3^2), where a
    1% error in the noise scale shows at M = 400,000 (z of about 9; about 6 at 200,000, 2 at 40,000)."""
    params = exact_posterior(near_posterior(2, 1, 5, S), S)
    g = torch.Generator().manual_seed(1)
    params |= {k: v + 0.3 * torch.randn(v.shape, generator=g, dtype=F64) for k, v in params.items()
               if k.startswith("encoder")}  # fmt: skip
    return model_of(2, 1, S), params, 1.5 * torch.randn(2, generator=torch.Generator().manual_seed(6), dtype=F64)


@pytest.mark.parametrize("name", list(MUTANTS))
def test_the_unbiasedness_check_catches_each_biased_estimator(name):
    """A fixed case (k = 3) and more draws (M = 40,000, or 400,000 for a 1% noise scale), where each
    mutant's bias stands out; the correct estimator passes the same check on the same draws."""
    objective, make, scale, draws = MUTANTS[name]
    model, params, x = power_case()
    k = 3
    eps = torch.cat([draw_eps(objective, k, 1, seed=100 + i, scale=scale) for i in range(draws)])
    ref = exact(objective, params, x, k)
    z = z_scores(estimates(make(model), params, x, eps), ref)
    print(f"{name}: max |z| = {float(z.abs().max()):.1f} (z_crit {z_crit(z.numel()):.2f})")
    assert float(z.abs().max()) > z_crit(z.numel())
    right = vaefunc_bound(model, objective, "dreg" if "dreg" in name else "reparam")
    z_right = z_scores(estimates(right, params, x, eps / scale), ref)
    assert float(z_right.abs().max()) < z_crit(z.numel())


def test_stl_and_dreg_have_zero_variance_at_the_exact_posterior_and_their_mutants_do_not():
    """q = p(z|x): log w is constant in z, so the path derivative is 0 for every draw (Roeder et al.;
    Tucker et al.); without the stop-gradient the score term remains."""
    params = exact_posterior(random_params(3, 2, seed=2), S)
    model, x = model_of(3, 2, S), torch.randn(3, generator=torch.Generator().manual_seed(0), dtype=F64)
    eps_elbo, eps_iwae = draw_eps("elbo", 1, 2, seed=0)[:500], draw_eps("iwae", 4, 2, seed=0)[:500]
    for bound, eps in ((vaefunc_bound(model, "elbo", "stl"), eps_elbo), (vaefunc_bound(model, "iwae", "dreg"), eps_iwae)):
        assert float(estimates(bound, params, x, eps, "encoder").abs().max()) < 1e-9
    for bound, eps in ((_stl_without_stop(model), eps_elbo), (dreg_mutant(model, stop=False), eps_iwae)):
        assert float(estimates(bound, params, x, eps, "encoder").std(0).max()) > 1e-2


def _stl_without_stop(model):
    def bound(p, x, e):
        rec, kl = estimators.importance_terms(model, p, x[None], e[None])  # the Monte Carlo KL, q live
        return (rec - kl).mean()
    return bound


def test_estimators_are_refused_where_they_do_not_apply():
    import vaefunc

    with pytest.raises(ValueError, match="gradient must be one of .*'reparam', 'stl'"):
        model_of(2, 1, S).loss("elbo", gradient="dreg")
    with pytest.raises(ValueError, match="IAF posterior"):
        vaefunc.VAE((4,), latent_dim=2, posterior="iaf").loss("iwae", gradient="dreg")
    with pytest.raises(ValueError, match="VampPrior"):
        vaefunc.VAE((4,), latent_dim=2, prior="vamp").loss("elbo", gradient="stl")
    with pytest.raises(ValueError, match=r"gradient \(objective='elbo'\) must be one of"):
        vaefunc.TrainConfig(gradient="dreg")
    assert "gradient" not in vaefunc.TrainConfig().to_dict()  # older runs' settings read the same
    assert vaefunc.TrainConfig(objective="iwae", gradient="dreg").to_dict()["gradient"] == "dreg"


def test_training_takes_each_estimator_from_python_and_the_command_line(tmp_path):
    import vaefunc
    from vaefunc.cli import main

    model = vaefunc.VAE((6,), latent_dim=2, hidden=(5,))
    x = torch.rand(64, 6, generator=torch.Generator().manual_seed(0))
    for objective, gradient in ESTIMATORS:
        result = vaefunc.train(model.init(seed=0), x, model=model, objective=objective, gradient=gradient, epochs=2,
                               batch_size=16, compile=False, progress=False)  # fmt: skip
        assert math.isfinite(result.history[-1]["loss"])
    ensemble = vaefunc.train_many(vaefunc.stack([model.init(seed=s) for s in (0, 1)]), x, model=model,
                                  objective="iwae", gradient="dreg", epochs=1, batch_size=16, progress=False)  # fmt: skip
    assert ensemble.params["encoder.0.weight"].shape[0] == 2
    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--limit", "200", "--epochs", "1", "--objective", "iwae", "--gradient",
                 "dreg", "--progress", "never", "--out", str(out), "--device", "cpu"]) == 0  # fmt: skip
    assert vaefunc.load(out / "checkpoint.safetensors").config["train"]["gradient"] == "dreg"
