"""Measurements of a trained VAE: test ELBO, KL per dimension, active units,
a semi-supervised model's classification error, anomaly scores with ROC AUC, and the Mutual Information Gap.

These run after training, on the host's schedule: they may read values back
(``float``), and the ones that need noise draw it from a local
``torch.Generator`` seeded by their ``seed=`` argument. No gradient is recorded.
Those that run the network take the :class:`vaefunc.VAE` spec as ``model=``
(or its static choices ``activation=``, ``likelihood=``, ``obs_std=`` as
vaefunc 0.1 did; default: ReLU, Bernoulli) and, for a conditional VAE, ``labels=``,
and show a tqdm bar of the examples done on stderr (``progress=``: True when
stderr is a terminal, as :func:`vaefunc.train` does, ``"always"``, or False).

Axis letters: b (or n) examples, z latent, f ground-truth factors.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import _check, _progress, _values, network
from ._types import Params
from .losses import kl_normal
from ._resolve import resolve
from .spec import VAE


def _batches(model: VAE, params: Params, x: Tensor, labels, batch_size: int, progress: bool | str = False,
             desc: str = ""):  # fmt: skip
    """(x, y) in batches on the params' device, checked once; y is None for an unconditional model.
    With ``progress``, a bar counts the examples done."""
    _check.positive_int("batch_size", batch_size)
    _progress.shown(progress)  # checked before any work
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor (n, *input_shape); got {type(x).__name__}")
    w = next(iter(params.values()))
    if x.ndim < 2 or math.prod(x.shape[1:]) != model.data_dim:
        raise ValueError(f"x must have shape (n, *{model.input_shape}); got {tuple(x.shape)}")
    y = None
    if labels is not None or model.n_classes:
        if labels is None:
            raise ValueError(f"these params are conditional on {model.n_classes} classes; pass labels=")
        y = _check.labels(labels, x.shape[0], model.n_classes, device=w.device)
    with _progress.bar(progress, x.shape[0], unit="ex", desc=desc) as bar:
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size].to(w.device, w.dtype)
            _values.finite("x", xb)
            _values.unit_interval("x", xb, model.likelihood)
            yield xb, None if y is None else y[i : i + batch_size]
            bar.update(xb.shape[0])


@torch.no_grad()
def encoder_means(params: Params, x: Tensor, *, labels=None, batch_size: int = 1000, activation: str = "relu",
                  model: VAE | None = None, progress: bool | str = True) -> Tensor:  # fmt: skip
    """E_q[z|x], the encoder's means, for a whole data set: (n, ...) -> (n, z).

    Example:
        >>> mu = encoder_means(params, x_test, model=model)
    """
    model = resolve(params, model, activation=activation)
    batches = _batches(model, params, x, labels, batch_size, progress, "encoder means")
    return torch.cat([model.encode(params, xb, yb)[0] for xb, yb in batches])


@torch.no_grad()
def elbo_per_example(params: Params, x: Tensor, *, labels=None, seed: int = 0, batch_size: int = 1000,
                     model: VAE | None = None, activation: str = "relu", likelihood: str = "bernoulli",
                     obs_std: float = 1.0, progress: bool | str = True) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Each example's single-sample ELBO terms: recon = log p(x|z) and kl, (n,) each, float64 on the CPU.

    z = mu + sigma * eps with eps one (n, z) draw from a generator seeded with
    ``seed``, taken in order by the batches, so ``batch_size`` does not change
    the numbers; kl is the KL term of :meth:`vaefunc.VAE.elbo` (closed form for N(0, I)).

    Example:
        >>> rec, kl = elbo_per_example(result.params, x_test, model=model)
        >>> (rec - kl).std() / len(x_test) ** 0.5   # the standard error of the test ELBO
    """
    model = resolve(params, model, likelihood=likelihood, obs_std=obs_std, activation=activation)
    seed = _check.seed(seed)
    eps, recs, kls = None, list[Tensor](), list[Tensor]()
    for xb, yb in _batches(model, params, x, labels, batch_size, progress, "ELBO"):
        if eps is None:
            gen = torch.Generator(device=xb.device).manual_seed(seed)
            eps = torch.randn(x.shape[0], model.noise_dim, generator=gen, device=xb.device, dtype=xb.dtype)
        done = sum(r.shape[0] for r in recs)
        rec, kl = model.elbo_terms(params, xb, eps[done : done + xb.shape[0]], yb)
        recs.append(rec.to("cpu", torch.float64))  # a sync point, once per batch
        kls.append(kl.to("cpu", torch.float64))
    if not recs:  # an empty batch: no terms
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
    return torch.cat(recs), torch.cat(kls)


def dataset_elbo(params: Params, x: Tensor, *, labels=None, likelihood: str = "bernoulli", obs_std: float = 1.0,
                 seed: int = 0, batch_size: int = 1000, activation: str = "relu",
                 model: VAE | None = None, progress: bool | str = True) -> dict[str, float]:  # fmt: skip
    """The mean single-sample ELBO of a data set and its two parts, in nats per example
    (the means of :func:`elbo_per_example`: one seeded noise draw for the whole set).

    Returns:
        {"elbo": ..., "recon": ..., "kl": ..., "n": number of examples}

    Example:
        >>> dataset_elbo(result.params, x_test, model=model)["elbo"]
    """
    rec, kl = elbo_per_example(params, x, labels=labels, seed=seed, batch_size=batch_size, model=model,
                               activation=activation, likelihood=likelihood, obs_std=obs_std,
                               progress=progress)  # fmt: skip
    n = rec.shape[0]
    return {"elbo": float((rec - kl).mean()), "recon": float(rec.mean()), "kl": float(kl.mean()), "n": n}


@torch.no_grad()
def kl_per_dim(params: Params, x: Tensor, *, labels=None, batch_size: int = 1000, activation: str = "relu",
               model: VAE | None = None, progress: bool | str = True) -> Tensor:  # fmt: skip
    """The closed-form KL(q(z_u|x) || N(0, 1)) of each latent dimension, averaged over x: (z,).

    It sums to the mean KL term of the ELBO. A dimension with KL near 0 is
    "collapsed": its posterior is the prior whatever x.

    Example:
        >>> kl_per_dim(result.params, x_test, model=model).sort(descending=True).values
    """
    model = resolve(params, model, activation=activation)
    total, n = None, 0
    for xb, yb in _batches(model, params, x, labels, batch_size, progress, "KL per dimension"):
        mu, logvar = model.encode(params, xb, yb)
        part = kl_normal(mu.unsqueeze(-1), logvar.unsqueeze(-1)).sum(0)  # (z,): KL per dimension
        total, n = part if total is None else total + part, n + xb.shape[0]
    if total is None:
        raise ValueError("kl_per_dim needs at least one example; got none")
    return total / n


@torch.no_grad()
def activity(params: Params, x: Tensor, *, labels=None, batch_size: int = 1000, activation: str = "relu",
             model: VAE | None = None, progress: bool | str = True) -> Tensor:  # fmt: skip
    """A_u = Cov_x(E_q[z_u | x]), the variance over the data of each encoder mean: (z,).

    The population variance (divided by n), as in Burda et al. (2015).

    Example:
        >>> activity(result.params, x_test) > 0.01   # the active units
    """
    means = encoder_means(params, x, labels=labels, batch_size=batch_size, activation=activation, model=model,
                          progress=progress)  # fmt: skip
    return means.double().var(0, correction=0)


def active_units(params: Params, x: Tensor, *, labels=None, threshold: float = 0.01, batch_size: int = 1000,
                 activation: str = "relu", model: VAE | None = None, progress: bool | str = True) -> int:  # fmt: skip
    """The number of active latent dimensions: those with A_u = Cov_x(E_q[z_u|x]) > threshold.

    Burda et al. (2015) use threshold 0.01.

    Example:
        >>> active_units(result.params, x_test, model=model)
        12
    """
    _check.number("threshold", threshold, minimum=0.0)
    a = activity(params, x, labels=labels, batch_size=batch_size, activation=activation, model=model,
                 progress=progress)  # fmt: skip
    return int((a > threshold).sum())


@torch.no_grad()
def classification_error(params: Params, x: Tensor, labels, *, model: VAE, batch_size: int = 1000,
                         progress: bool | str = True) -> float:  # fmt: skip
    """The share of examples whose most probable class under a semi-supervised model's q(y|x) is not
    their label: x (n, ...), labels ints (n,) -> a float in [0, 1].

    Example:
        >>> classification_error(result.params, x_test, y_test, model=model)   # Kingma et al. M2: ~0.12 at 100 labels
    """
    if not isinstance(model, VAE) or not model.semi_supervised:
        got = type(model).__name__ if not isinstance(model, VAE) else "a model with semi_supervised=False"
        raise ValueError(f"classification_error needs a semi-supervised model (VAE(..., semi_supervised=True)); "
                         f"got {got}")  # fmt: skip
    if labels is None:
        raise ValueError("classification_error needs the true labels (ints (n,)); got None")
    wrong = 0
    for xb, yb in _batches(model, params, x, labels, batch_size, progress, "classify"):
        yb = yb.argmax(-1) if yb.is_floating_point() else yb
        wrong += int((model.classify(params, xb).argmax(-1) != yb).sum())  # a sync point, once per batch
    return wrong / max(x.shape[0], 1)


def roc_auc(scores: Tensor, labels: Tensor) -> float:
    """The area under the ROC curve, exactly, from the Mann-Whitney U statistic.

    AUC = P(s+ > s-) + P(s+ = s-) / 2 for a random positive (label 1) and a random
    negative (label 0): ties count one half, through average ranks:
    AUC = (R+ - n+ (n+ + 1) / 2) / (n+ n-), R+ the positives' rank sum.

    Args:
        scores: (n,) real scores; higher means "more positive".
        labels: (n,) 0/1 or bool; both classes must be present.

    Returns:
        The AUC in [0, 1]; 0.5 for uninformative scores.

    Example:
        >>> roc_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
        0.75
    """
    scores, labels = torch.as_tensor(scores), torch.as_tensor(labels)
    if scores.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(
            f"scores and labels must be two (n,) tensors; got {tuple(scores.shape)} and {tuple(labels.shape)}"
        )
    if not bool(torch.isfinite(scores.double()).all()):
        raise ValueError("scores must be finite; got NaN or inf")
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError(f"labels must be 0/1 or bool; got values {torch.unique(labels).tolist()}")
    pos = labels.bool().cpu()
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"roc_auc needs both classes; got {n_pos} positives and {n_neg} negatives")
    s = scores.double().cpu()
    sorted_s, order = torch.sort(s)
    _, counts = torch.unique_consecutive(sorted_s, return_counts=True)
    ends = counts.cumsum(0).double()
    avg_rank = torch.repeat_interleave(ends - (counts.double() - 1) / 2, counts)  # 1-based, ties averaged
    ranks = torch.empty_like(s)
    ranks[order] = avg_rank
    rank_sum = float(ranks[pos].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


SCORES = ("nll", "elbo", "recon")
"""The anomaly scores by name (see :func:`anomaly_score`)."""


@torch.no_grad()
def reconstruction_error(params: Params, x: Tensor, *, labels=None, batch_size: int = 1000, model: VAE | None = None,
                         activation: str = "relu", likelihood: str = "bernoulli", obs_std: float = 1.0) -> Tensor:  # fmt: skip
    """-log p(x | z = mu(x)) per example, in nats: the reconstruction error at the posterior mean, (n,).

    For the Bernoulli likelihood it is the binary cross-entropy of x and its
    reconstruction; for the Gaussian, the squared error scaled by the
    variance (plus its constant). Deterministic: no noise.

    Example:
        >>> reconstruction_error(result.params, x_test, model=model)
    """
    model = resolve(params, model, likelihood=likelihood, obs_std=obs_std, activation=activation)
    out = []
    for xb, yb in _batches(model, params, x, labels, batch_size):
        mu, _ = model.encode(params, xb, yb)
        logits = network.flat_output(model, model.decode(params, mu, yb))
        out.append(-model.log_px(params, logits, xb.reshape(xb.shape[0], -1)))
    if not out:  # an empty batch: no errors
        w = next(iter(params.values()))
        return torch.zeros(0, dtype=w.dtype, device=w.device)
    return torch.cat(out)


def anomaly_score(params: Params, x: Tensor, *, score: str = "nll", labels=None, k: int = 1000, seed: int = 0,
                  chunk: int | None = None, likelihood: str = "bernoulli", obs_std: float = 1.0,
                  activation: str = "relu", model: VAE | None = None, progress: bool | str = True) -> Tensor:  # fmt: skip
    """An anomaly score per example, in nats: higher means more anomalous, (n,).

    - ``"nll"``: -log p(x), importance-sampled with k samples per example
      (``-model.log_likelihood(params, x, labels, k=k, seed=seed, chunk=chunk)``);
    - ``"elbo"``: the negative single-sample ELBO (:func:`elbo_per_example`, noise seeded by ``seed``);
    - ``"recon"``: the reconstruction error at z = mu (:func:`reconstruction_error`), the
      score most practitioners' write-ups use.

    Args:
        score: which of the three.
        progress: a bar of the work when stderr is a terminal (``"always"``, ``False``).
        labels: for a conditional VAE, each example's class: ints (n,) or
            one-hot (n, n_classes); the scores then condition on it.
        likelihood, obs_std, activation: the model's static choices, or
        model: its :class:`vaefunc.VAE` spec.

    Example:
        >>> s = anomaly_score(result.params, x_test, score="recon", model=model)
        >>> roc_auc(s, is_outlier)
    """
    _check.params_dict(params)
    model = resolve(params, model, likelihood=likelihood, obs_std=obs_std, activation=activation)
    model.check(params)  # exactly the model's keys and shapes, one dtype
    _check.finite_tree("params", params, " (a non-finite checkpoint?)")
    _check.choice("score", score, SCORES)
    _check.positive_int("k", k, maximum=2**30)  # every argument checked, whichever score reads it (the caps:
    seed = _check.seed(seed)  # log_likelihood's)
    if chunk is not None:
        _check.positive_int("chunk", chunk, maximum=2**30)
    _check.option("progress", progress, _progress.PROGRESS)
    if score == "nll":
        return -model.log_likelihood(params, x, labels, k=k, seed=seed, chunk=chunk, progress=progress)
    w = next(iter(params.values()))
    if score == "elbo":
        rec, kl = elbo_per_example(params, x, labels=labels, seed=seed, model=model, progress=progress)
        return (kl - rec).to(w.device, w.dtype)
    return reconstruction_error(params, x, labels=labels, model=model)


def entropy(v: Tensor) -> float:
    """The entropy, in nats, of the empirical distribution of the discrete values v: (n,).

    Example:
        >>> entropy(torch.tensor([0, 1, 0, 1]))   # log 2
        0.6931471805599453
    """
    _, counts = torch.unique(v, return_counts=True)
    p = counts.double() / v.shape[0]
    return float(-(p * p.log()).sum())


def discrete_mutual_info(a: Tensor, b: Tensor) -> float:
    """I(a; b) in nats of the empirical joint distribution of two discrete sequences (n,).

    The plug-in estimate sum_ab p(a, b) log(p(a, b) / (p(a) p(b))); it is
    biased upward by about (|A| - 1)(|B| - 1) / (2n) for independent a, b.

    Example:
        >>> discrete_mutual_info(torch.tensor([0, 0, 1, 1]), torch.tensor([5, 5, 7, 7]))   # log 2
        0.6931471805599453
    """
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be two (n,) sequences; got {tuple(a.shape)} and {tuple(b.shape)}")
    _, ia = torch.unique(a, return_inverse=True)
    _, ib = torch.unique(b, return_inverse=True)
    nb = int(ib.max()) + 1
    joint = torch.bincount(ia * nb + ib, minlength=(int(ia.max()) + 1) * nb).double().view(-1, nb) / a.shape[0]
    pa, pb = joint.sum(1, keepdim=True), joint.sum(0, keepdim=True)
    nz = joint > 0
    return float((joint[nz] * (joint[nz] / (pa * pb)[nz]).log()).sum())


def discretize(codes: Tensor, bins: int) -> Tensor:
    """Each column of codes (n, z) cut into ``bins`` equal-width bins over its range: ints in [0, bins), (n, z).

    The binning of disentanglement_lib's ``_histogram_discretize``, numbered from 0:
    ``np.digitize(c, np.histogram(c, bins)[1][:-1]) - 1`` for each column c. The
    edges are numpy's, e_i = lo + i * ((hi - lo) / bins) computed in the codes'
    dtype (float32 or float64; other dtypes are binned in float64) as ``np.linspace``
    computes them; a value on an edge e_i goes to bin i (the bin above it), and
    the column's maximum to the last bin. A constant column is one bin (numpy
    widens its range to [v - 0.5, v + 0.5]). A column whose range is too narrow
    for ``bins`` distinct edges in its dtype (where ``np.histogram`` raises) is
    still binned: edges that coincide leave empty bins between them.

    Example:
        >>> discretize(torch.tensor([[0.0], [0.4], [0.5], [1.0]]), 2).flatten()
        tensor([0, 0, 1, 1])
    """
    if codes.dtype not in (torch.float32, torch.float64):
        codes = codes.double()
    lo, hi = codes.min(0).values, codes.max(0).values
    flat = hi == lo
    lo, hi = torch.where(flat, lo - 0.5, lo), torch.where(flat, hi + 0.5, hi)
    step = (hi - lo) / bins
    # (bins, z): e_0 .. e_{bins-1}, in np.linspace's order of operations, so every edge is the same float
    edges = torch.arange(bins, dtype=codes.dtype, device=codes.device)[:, None] * step + lo
    # digitize: the number of edges <= v, from 1 (e_0 = lo <= v) to bins
    return torch.searchsorted(edges.T.contiguous(), codes.T.contiguous(), right=True).T - 1


def mutual_info_gap(factors: Tensor, codes: Tensor, *, bins: int = 20) -> dict[str, object]:
    """The Mutual Information Gap (Chen et al. 2018) of a representation.

    MIG = 1/F sum_f (I(z_j*; v_f) - max_{j != j*} I(z_j; v_f)) / H(v_f), with
    j* = argmax_j I(z_j; v_f): for each ground-truth factor, the gap between the
    two latent dimensions that know most about it, normalised by the factor's
    entropy. It is 1 when every factor is captured by exactly one dimension and
    near 0 when no dimension carries a factor alone. The estimator is the
    discretised one of Chen et al. / disentanglement_lib: each code dimension is
    histogrammed into ``bins`` equal-width bins exactly as disentanglement_lib's
    ``_histogram_discretize`` does (:func:`discretize`: float32 codes are binned in
    float32, as numpy bins them) and the plug-in discrete mutual information is
    used (so it is biased upward by about bins * |v_f| / (2n)).
    Factors that are constant (entropy 0) are skipped.

    Args:
        factors: (n, f) discrete ground-truth factor values (ints).
        codes: (n, z) representations, e.g. :func:`encoder_means`; z >= 2.
        bins: histogram bins per code dimension.

    Returns:
        {"mig": float, "gaps": list of the per-factor normalised gaps (None for a
        constant factor), "mi": (f, z) tensor of I(z_j; v_f) in nats,
        "entropy": list of H(v_f) in nats}

    Example:
        >>> x, factors = vaefunc.data.load("dsprites", n=10_000, split="test")
        >>> mutual_info_gap(factors, encoder_means(params, x))["mig"]
    """
    factors, codes = torch.as_tensor(factors), torch.as_tensor(codes)
    if factors.ndim != 2 or codes.ndim != 2 or factors.shape[0] != codes.shape[0] or factors.shape[0] == 0:
        raise ValueError(
            "factors must be (n, f) and codes (n, z) with the same n > 0; "
            f"got {tuple(factors.shape)} and {tuple(codes.shape)}"
        )
    if codes.shape[1] < 2:
        raise ValueError(f"the MIG needs at least 2 code dimensions; got {codes.shape[1]}")
    if factors.is_floating_point() or factors.is_complex():
        raise TypeError(f"factors must be discrete (an integer dtype); got {factors.dtype}")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins must be an int >= 2; got {bins!r}")
    if not bool(torch.isfinite(codes.double()).all()):
        raise ValueError("codes must be finite; got NaN or inf")
    factors, binned = factors.cpu(), discretize(codes.cpu(), bins)
    n_codes, n_factors = binned.shape[1], factors.shape[1]
    mi = torch.tensor(
        [[discrete_mutual_info(binned[:, j], factors[:, f]) for j in range(n_codes)] for f in range(n_factors)],
        dtype=torch.float64,
    )
    ents = [entropy(factors[:, f]) for f in range(factors.shape[1])]
    gaps: list[float | None] = []
    for f, h in enumerate(ents):
        if h <= 0.0:
            gaps.append(None)
            continue
        top = torch.topk(mi[f], 2).values
        gaps.append(float((top[0] - top[1]) / h))
    real = [g for g in gaps if g is not None]
    if not real:
        raise ValueError("every factor is constant; the MIG is undefined")
    return {"mig": sum(real) / len(real), "gaps": gaps, "mi": mi, "entropy": ents}
