"""Measurements on cases whose answers are known: ROC AUC against sklearn, activity and
KL per dimension in closed form, the MIG of disentangled, random and entangled codes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import mutual_info_score, roc_auc_score

import vaefunc
from vaefunc import metrics

F64 = torch.float64


# --- ROC AUC -------------------------------------------------------------------------------------


@given(
    scores=st.lists(st.integers(0, 4), min_size=2, max_size=60),  # few distinct values: many ties
    data=st.data(),
)
def test_roc_auc_equals_sklearn_with_ties(scores, data):
    labels = data.draw(st.lists(st.integers(0, 1), min_size=len(scores), max_size=len(scores)))
    labels[0], labels[1] = 0, 1  # both classes present
    s, y = torch.tensor(scores, dtype=F64), torch.tensor(labels)
    assert metrics.roc_auc(s, y) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_roc_auc_known_answers():
    y = torch.tensor([0, 0, 1, 1])
    assert metrics.roc_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), y) == 0.75
    assert metrics.roc_auc(torch.tensor([1.0, 2.0, 3.0, 4.0]), y) == 1.0
    assert metrics.roc_auc(torch.tensor([4.0, 3.0, 2.0, 1.0]), y) == 0.0
    assert metrics.roc_auc(torch.ones(4), y) == 0.5  # all tied
    assert metrics.roc_auc(torch.tensor([1.0, 2.0, 2.0, 3.0]), y.bool()) == 0.875  # one tie across classes


def test_roc_auc_bad_input():
    with pytest.raises(ValueError, match="both classes"):
        metrics.roc_auc(torch.rand(3), torch.ones(3))
    with pytest.raises(ValueError, match="0/1"):
        metrics.roc_auc(torch.rand(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="finite"):
        metrics.roc_auc(torch.tensor([0.0, float("nan")]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"two \(n,\) tensors"):
        metrics.roc_auc(torch.rand(3), torch.tensor([0, 1]))


# --- ELBO, KL per dimension, active units ----------------------------------------------------------


def _linear_encoder(d: int, w: torch.Tensor, b_mu: torch.Tensor, logvar: torch.Tensor):
    """Params with mu = w * x[:, 0] + b_mu and a constant logvar (a linear encoder, hidden=())."""
    z = w.shape[0]
    params = vaefunc.VAE((d,), latent_dim=z, hidden=()).init(0, dtype=F64)
    weight = torch.zeros(2 * z, d, dtype=F64)
    weight[:z, 0] = w
    params["encoder.0.weight"] = weight
    params["encoder.0.bias"] = torch.cat([b_mu, logvar])
    return params


def test_activity_and_active_units_in_closed_form():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(500, 6, generator=gen, dtype=F64)
    w = torch.tensor([1.0, 0.5, 0.05, 0.0], dtype=F64)
    params = _linear_encoder(6, w, torch.zeros(4, dtype=F64), torch.zeros(4, dtype=F64))
    expected = w.square() * x[:, 0].var(correction=0)  # Var(w x0) = w^2 Var(x0), about w^2 / 12
    torch.testing.assert_close(metrics.activity(params, x, batch_size=128), expected)
    assert metrics.active_units(params, x, batch_size=128) == 2  # 1/12, 0.25/12 > 0.01; 0.0025/12, 0 are not
    assert metrics.active_units(params, x, threshold=1e-4) == 3
    means = metrics.encoder_means(params, x, batch_size=77)
    torch.testing.assert_close(means, vaefunc.VAE.from_params(params).encode(params, x)[0])


def test_kl_per_dim_in_closed_form_and_sums_to_the_elbo_kl():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(300, 5, generator=gen, dtype=F64)
    b_mu = torch.tensor([0.5, -1.0, 0.0], dtype=F64)
    logvar = torch.tensor([0.0, -2.0, 1.0], dtype=F64)
    params = _linear_encoder(5, torch.zeros(3, dtype=F64), b_mu, logvar)
    expected = 0.5 * (b_mu.square() + logvar.exp() - 1.0 - logvar)
    torch.testing.assert_close(metrics.kl_per_dim(params, x, batch_size=64), expected)
    report = metrics.dataset_elbo(params, x, seed=3, batch_size=64)
    assert report["kl"] == pytest.approx(float(expected.sum()), rel=1e-12)
    assert report["elbo"] == pytest.approx(report["recon"] - report["kl"], rel=1e-12)
    assert report["n"] == 300


def test_dataset_elbo_is_the_mean_elbo_at_seeded_noise():
    model = vaefunc.VAE((1, 8, 8), latent_dim=2, hidden=(4,), arch="conv", channels=(2,), n_classes=3)
    params = model.init(0)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(10, 1, 8, 8, generator=gen), torch.randint(0, 3, (10,), generator=gen)
    report = metrics.dataset_elbo(params, x, labels=y, seed=4, batch_size=10)
    eps = torch.randn(10, 2, generator=torch.Generator().manual_seed(4))
    assert report["elbo"] == pytest.approx(float(model.elbo(params, x, eps, labels=y).mean()), rel=1e-6)
    assert metrics.dataset_elbo(params, x, labels=y, seed=4, batch_size=10) == report
    assert metrics.kl_per_dim(params, x, labels=y).shape == (2,)
    with pytest.raises(ValueError, match="pass labels="):
        metrics.dataset_elbo(params, x)
    with pytest.raises(ValueError, match=r"shape \(n, \*\(1, 8, 8\)\)"):
        metrics.activity(params, torch.rand(3, 10), labels=[0, 1, 2])
    with pytest.raises(ValueError, match="batch_size"):
        metrics.activity(params, x, labels=y, batch_size=0)



def test_metrics_run_the_network_with_the_activation_they_are_given():
    params = vaefunc.VAE((1, 8, 8), latent_dim=2, hidden=(4,), arch="conv", channels=(2,)).init(0, dtype=F64)
    tanh = vaefunc.VAE((1, 8, 8), latent_dim=2, hidden=(4,), arch="conv", channels=(2,), activation="tanh")
    x = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    eps = torch.randn(10, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    report = metrics.dataset_elbo(params, x, seed=4, activation="tanh")
    assert report["elbo"] == pytest.approx(float(tanh.elbo(params, x, eps).mean()), rel=1e-12)
    assert report["elbo"] != pytest.approx(metrics.dataset_elbo(params, x, seed=4)["elbo"], rel=1e-6)
    mu, logvar = tanh.encode(params, x)
    torch.testing.assert_close(metrics.encoder_means(params, x, batch_size=3, activation="tanh"), mu)
    torch.testing.assert_close(metrics.kl_per_dim(params, x, activation="tanh"), vaefunc.kl_normal(
        mu.unsqueeze(-1), logvar.unsqueeze(-1)).mean(0))  # fmt: skip
    assert metrics.active_units(params, x, threshold=0.0, activation="tanh") == int((mu.var(0, correction=0) > 0).sum())


# --- Mutual Information Gap -------------------------------------------------------------------------


def test_discrete_mutual_info_equals_sklearn():
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (400,), generator=gen)
    b = (a + torch.randint(0, 3, (400,), generator=gen)) % 7
    assert metrics.discrete_mutual_info(a, b) == pytest.approx(mutual_info_score(a.numpy(), b.numpy()), rel=1e-12)
    assert metrics.entropy(a) == pytest.approx(mutual_info_score(a.numpy(), a.numpy()), rel=1e-12)


def test_mig_exact_on_a_tiny_case():
    factors = torch.tensor([[0], [0], [1], [1]])
    codes = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])  # dim 0 is the factor, dim 1 noise
    out = metrics.mutual_info_gap(factors, codes, bins=2)
    assert out["mig"] == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(out["mi"], torch.tensor([[math.log(2), 0.0]], dtype=F64))


def _factors(n: int, sizes, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, s, (n,), generator=gen) for s in sizes], dim=1)


def test_mig_near_one_for_a_disentangled_code_and_near_zero_for_a_random_one():
    # n = 20,000 and at most 20 bins x 10 values: the plug-in MI of independent pairs is about
    # (20 - 1)(10 - 1) / (2n) = 0.004 nats, so the gaps are off by at most a few hundredths.
    n, sizes = 20_000, (3, 6, 10)
    factors = _factors(n, sizes, seed=0)
    gen = torch.Generator().manual_seed(1)
    jitter = 0.01 * torch.rand(n, 4, generator=gen)
    # each factor in its own dimension (rescaled, shifted), plus one pure-noise dimension
    disentangled = torch.cat([factors.double() * torch.tensor([2.0, -1.0, 0.5]), torch.rand(n, 1, generator=gen)], 1)
    out = metrics.mutual_info_gap(factors, disentangled + jitter)
    assert out["mig"] > 0.97
    assert all(g > 0.97 for g in out["gaps"])
    random_code = torch.randn(n, 4, generator=gen)
    assert metrics.mutual_info_gap(factors, random_code)["mig"] < 0.02
    # negative control: the same information, entangled by a rotation, scores far lower
    f = factors.double() / torch.tensor(sizes, dtype=F64)
    entangled = torch.stack([f[:, 0] + f[:, 1] + f[:, 2], f[:, 0] - f[:, 1], f[:, 1] - f[:, 2], f[:, 2] - f[:, 0]], 1)
    assert metrics.mutual_info_gap(factors, entangled)["mig"] < 0.5


def test_mig_skips_constant_factors_and_rejects_bad_input():
    factors = torch.cat([_factors(1000, (4,), seed=0), torch.zeros(1000, 1, dtype=torch.int64)], 1)
    codes = torch.cat([factors[:, :1].double(), torch.rand(1000, 1, generator=torch.Generator().manual_seed(0))], 1)
    out = metrics.mutual_info_gap(factors, codes)
    assert out["gaps"][1] is None and out["mig"] == pytest.approx(out["gaps"][0])
    with pytest.raises(ValueError, match="at least 2 code dimensions"):
        metrics.mutual_info_gap(factors, codes[:, :1])
    with pytest.raises(TypeError, match="discrete"):
        metrics.mutual_info_gap(factors.double(), codes)
    with pytest.raises(ValueError, match="same n"):
        metrics.mutual_info_gap(factors[:10], codes)
    with pytest.raises(ValueError, match="every factor is constant"):
        metrics.mutual_info_gap(factors[:, 1:], codes)


# --- MIG binning: disentanglement_lib's, value for value -------------------------------------------


def _dlib_discretize(target: np.ndarray, num_bins: int) -> np.ndarray:
    """disentanglement_lib's ``_histogram_discretize``: target (z, n) -> bins numbered 1..num_bins."""
    discretized = np.zeros_like(target)
    for i in range(target.shape[0]):
        discretized[i, :] = np.digitize(target[i, :], np.histogram(target[i, :], num_bins)[1][:-1])
    return discretized


def _dlib_mig(factors: np.ndarray, codes: np.ndarray, num_bins: int) -> float:
    """disentanglement_lib's ``_compute_mig`` on (n, f) factors and (n, z) codes, with its
    ``discrete_mutual_info`` and ``discrete_entropy`` (sklearn's mutual_info_score)."""
    mus, ys = _dlib_discretize(codes.T, num_bins), factors.T
    m = np.array([[mutual_info_score(ys[j], mus[i]) for j in range(ys.shape[0])] for i in range(mus.shape[0])])
    entropy = np.array([mutual_info_score(ys[j], ys[j]) for j in range(ys.shape[0])])
    sorted_m = np.sort(m, axis=0)[::-1]
    return float(np.mean((sorted_m[0, :] - sorted_m[1, :]) / entropy))


def _floor_discretize(codes: torch.Tensor, bins: int) -> torch.Tensor:
    """vaefunc's former binning, floor((v - lo) / width): the negative control (edges land by rounding)."""
    lo, hi = codes.min(0).values, codes.max(0).values
    width = torch.where(hi > lo, (hi - lo) / bins, torch.ones_like(hi))
    return ((codes - lo) / width).floor().clamp(0, bins - 1).long()


def _on_edges(codes: torch.Tensor, bins: int) -> int:
    """How many values lie exactly on one of numpy's interior bin edges of their column."""
    c = codes.numpy()
    return sum(int(np.isin(c[:, j], np.histogram(c[:, j], bins)[1][1:-1]).sum()) for j in range(c.shape[1]))


def _gridded(n: int, sizes, bins: int, seed: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors and codes k * 0.1 - 0.7 with integer k in [0, bins] (both ends present), so that most
    values sit exactly on a bin edge of their column (the rest within an ulp of one): one code per
    factor (its value spread over the grid, plus 0/1 jitter) and one pure-noise code."""
    gen = torch.Generator().manual_seed(seed)
    factors = torch.stack([torch.randint(0, s, (n,), generator=gen) for s in sizes], 1)
    ks = [(factors[:, j] * (bins // s) + torch.randint(0, 2, (n,), generator=gen)).clamp(0, bins)
          for j, s in enumerate(sizes)] + [torch.randint(0, bins + 1, (n,), generator=gen)]  # fmt: skip
    k = torch.stack(ks, 1)
    k[0], k[1] = 0, bins
    return factors, k.to(dtype) * 0.1 - 0.7


def _reference_bins(codes: torch.Tensor, bins: int) -> torch.Tensor:
    return torch.from_numpy(_dlib_discretize(codes.numpy().T, bins).T.astype(np.int64)) - 1


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("bins", [2, 7, 10, 20])
def test_discretize_equals_numpy_histogram_digitize_on_edges_and_constant_columns(dtype, bins):
    """Every value, edges included, lands in the bin np.digitize(c, np.histogram(c, bins)[1][:-1]) - 1 gives."""
    _, grid = _gridded(2000, (2, 5), bins, seed=bins, dtype=dtype)
    k = torch.arange(bins + 1, dtype=dtype)
    grid2 = torch.stack([k / bins, k * (1.0 / bins), k / bins * 3.3 + 0.2, k * 0.25 - 1.0], 1)  # other edge grids
    constant = torch.tensor([[2.5, 0.0, -1e-3]], dtype=dtype).expand(50, 3)
    random_codes = torch.randn(500, 3, generator=torch.Generator().manual_seed(bins), dtype=dtype)
    for codes in (grid, grid2, constant, random_codes, torch.cat([random_codes[:37], constant[:37]], 1)):
        binned = metrics.discretize(codes, bins)
        assert binned.dtype == torch.int64 and binned.shape == codes.shape
        torch.testing.assert_close(binned, _reference_bins(codes, bins), rtol=0, atol=0)
    assert bool((metrics.discretize(constant, bins) == metrics.discretize(constant, bins)[0]).all())  # one bin each
    assert _on_edges(grid, bins) + _on_edges(grid2, bins) > 0  # values exactly on edges are really exercised


def test_the_floor_binning_misses_edges_the_reference_does_not():
    """Negative control for the test above: vaefunc's former floor((v - lo) / width) puts some
    edge values one bin away from numpy's, and the comparison sees it."""
    misses = 0
    for bins in (10, 20):
        for dtype in (torch.float64, torch.float32):
            _, grid = _gridded(2000, (2, 5), bins, seed=bins, dtype=dtype)
            misses += int((_floor_discretize(grid, bins) != _reference_bins(grid, bins)).sum())
    assert misses > 0


@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 300),
    levels=st.integers(1, 60),
    bins=st.integers(2, 40),
    scale=st.floats(1e-3, 1e3),
    shift=st.floats(-1e3, 1e3),
    dtype=st.sampled_from([torch.float64, torch.float32]),
)
def test_discretize_equals_numpy_on_random_and_quantized_codes(seed, n, levels, bins, scale, shift, dtype):
    gen = torch.Generator().manual_seed(seed)
    random_codes = (torch.randn(n, 2, generator=gen, dtype=torch.float64) * scale + shift).to(dtype)
    quantized = (torch.randint(0, levels, (n, 2), generator=gen).to(dtype) * (scale / levels) + shift).to(dtype)
    for codes in (random_codes, quantized):
        binned = metrics.discretize(codes, bins)
        try:
            reference = _reference_bins(codes, bins)
        except ValueError as e:  # a range too narrow for `bins` distinct edges in this dtype: numpy refuses
            assert "Too many bins" in str(e)
            assert bool(((binned >= 0) & (binned < bins)).all())
            for j in range(codes.shape[1]):  # ours still bins it, monotonically in the value
                order = codes[:, j].argsort()
                assert bool((binned[order, j].diff() >= 0).all())
            continue
        torch.testing.assert_close(binned, reference, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("bins", [10, 20])
def test_mig_equals_disentanglement_lib_on_gridded_codes(dtype, bins, monkeypatch):
    """Codes on a grid whose every value is a bin edge: the MIG equals disentanglement_lib's
    (numpy histogram/digitize binning, sklearn's mutual information) to 1e-12."""
    factors, codes = _gridded(3000, (3, 5, 6), bins, seed=bins, dtype=dtype)
    codes = torch.cat([codes, torch.full((3000, 1), 0.3, dtype=dtype)], 1)  # and a constant code
    reference = _dlib_mig(factors.numpy(), codes.numpy(), bins)
    assert metrics.mutual_info_gap(factors, codes, bins=bins)["mig"] == pytest.approx(reference, rel=0, abs=1e-12)
    # negative control: the former floor binning (in float64), on the same codes, is 3e-4 to 5e-2 off
    monkeypatch.setattr(metrics, "discretize", lambda c, b: _floor_discretize(c.double(), b))
    assert abs(metrics.mutual_info_gap(factors, codes, bins=bins)["mig"] - reference) > 1e-4


# --- anomaly score ---------------------------------------------------------------------------------


def test_anomaly_score_is_the_exact_negative_log_likelihood_when_q_is_the_prior():
    """With q(z|x) = p(z) = N(0, I) and a decoder that ignores z, every importance weight is
    p(x|z) = p(x) = prod_d Bernoulli(x_d; sigmoid(b_d)), so the estimate is exact for any k."""
    gen = torch.Generator().manual_seed(0)
    params = vaefunc.VAE((12,), latent_dim=3, hidden=()).init(0, dtype=F64)
    params = {k: torch.zeros_like(v) for k, v in params.items()}
    params["decoder.0.bias"] = torch.randn(12, generator=gen, dtype=F64) * 2
    normal = torch.bernoulli(torch.sigmoid(params["decoder.0.bias"]).expand(40, 12), generator=gen)
    outliers = 1.0 - (params["decoder.0.bias"] > 0).to(F64).expand(5, 12)  # the least likely pattern
    x = torch.cat([normal, outliers])
    expected = -vaefunc.bernoulli_log_prob(params["decoder.0.bias"].expand(45, 12), x)
    scores = vaefunc.anomaly_score(params, x, k=7, seed=3)
    torch.testing.assert_close(scores, expected)
    assert metrics.roc_auc(scores, torch.arange(45) >= 40) == 1.0
    # negative control: a decoder that depends on z makes the weights vary, and the estimate is no longer exact
    params["decoder.0.weight"] = torch.ones(12, 3, dtype=F64)
    assert not torch.allclose(vaefunc.anomaly_score(params, x, k=7, seed=3), expected)


def test_anomaly_score_of_a_conditional_model_scores_x_given_its_label():
    model = vaefunc.VAE((12,), latent_dim=3, hidden=(7,), n_classes=4)
    params = model.init(1, dtype=F64)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(9, 12, generator=gen, dtype=F64), torch.randint(0, 4, (9,), generator=gen)
    scores = vaefunc.anomaly_score(params, x, labels=y, k=30, seed=2)
    torch.testing.assert_close(scores, -model.log_likelihood(params, x, labels=y, k=30, seed=2), rtol=0, atol=0)
    assert scores.shape == (9,) and bool(torch.isfinite(scores).all())
    assert not torch.allclose(vaefunc.anomaly_score(params, x, labels=(y + 1) % 4, k=30, seed=2), scores)
    tanh = vaefunc.anomaly_score(params, x, labels=y, k=30, seed=2, activation="tanh")
    tanh_model = vaefunc.VAE((12,), latent_dim=3, hidden=(7,), n_classes=4, activation="tanh")
    torch.testing.assert_close(tanh, -tanh_model.log_likelihood(params, x, y, k=30, seed=2))
    with pytest.raises(ValueError, match="conditional on 4 classes"):
        vaefunc.anomaly_score(params, x, k=2)


def test_classification_error_counts_argmax_q_y_given_x_mistakes():
    """The share of examples whose argmax q(y|x) is not their label, batch by batch as in one pass; the
    same for one-hot labels; exactly 0 against the model's own predictions and 1 against shifted ones."""
    model = vaefunc.VAE((12,), latent_dim=2, hidden=(5,), n_classes=3, semi_supervised=True)
    params = model.init(0, dtype=torch.float64)
    x = torch.rand(50, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.randint(0, 3, (50,), generator=torch.Generator().manual_seed(2))
    pred = model.classify(params, x).argmax(-1)
    expected = float((pred != y).double().mean())
    got = metrics.classification_error(params, x, y, model=model, batch_size=7, progress=False)
    assert got == pytest.approx(expected, abs=1e-15)
    one_hot = torch.nn.functional.one_hot(y, 3).double()
    assert metrics.classification_error(params, x, one_hot, model=model, progress=False) == got
    assert metrics.classification_error(params, x, pred, model=model, progress=False) == 0.0
    assert metrics.classification_error(params, x, (pred + 1) % 3, model=model, progress=False) == 1.0


def test_classification_error_bad_input():
    ssl = vaefunc.VAE((12,), latent_dim=2, hidden=(5,), n_classes=3, semi_supervised=True)
    params, x = ssl.init(0), torch.rand(4, 12)
    plain = vaefunc.VAE((12,), latent_dim=2, hidden=(5,), n_classes=3)
    with pytest.raises(ValueError, match="needs a semi-supervised model"):
        metrics.classification_error(plain.init(0), x, torch.zeros(4, dtype=torch.long), model=plain)
    with pytest.raises(ValueError, match="needs the true labels"):
        metrics.classification_error(params, x, None, model=ssl)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        metrics.classification_error(params, x, torch.zeros(3, dtype=torch.long), model=ssl)
    with pytest.raises(ValueError):
        metrics.classification_error(params, x, torch.full((4,), -1), model=ssl)  # unlabelled: no truth to score


def test_kl_per_dim_of_no_examples_says_so():
    import vaefunc.metrics

    params = vaefunc.VAE((12,), latent_dim=2, hidden=(8,)).init(seed=0)
    with pytest.raises(ValueError, match="at least one example"):
        vaefunc.metrics.kl_per_dim(params, torch.rand(0, 12))
