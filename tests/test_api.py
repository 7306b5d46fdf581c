"""The public API: vaefunc.__all__ is pinned, and every public name is documented."""

from __future__ import annotations

import inspect

import pytest

import vaefunc

PUBLIC = [
    "AdamState",
    "Checkpoint",
    "CheckpointError",
    "DivergenceWarning",
    "EnsembleResult",
    "GraphedStep",
    "KLSchedule",
    "NonFiniteLossError",
    "Optimizer",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "VAE",
    "VAEModule",
    "adam",
    "anomaly_score",
    "apply_updates",
    "augment",
    "bernoulli_log_prob",
    "capacity_annealing",
    "chain",
    "clip_by_global_norm",
    "constant_beta",
    "continuous_bernoulli_log_norm",
    "continuous_bernoulli_log_prob",
    "decode",
    "elbo",
    "encode",
    "free_bits",
    "from_state_dict",
    "fused_adam",
    "gaussian_log_prob",
    "init",
    "init_many",
    "init_obs_logstd",
    "init_prior",
    "iwae",
    "iwae_paper_lr",
    "kl_monte_carlo",
    "kl_normal",
    "linear_warmup",
    "load",
    "log_likelihood",
    "log_weights",
    "make_elbo_loss",
    "make_ensemble_step",
    "make_loss",
    "make_step",
    "paper_alpha",
    "preset_train_kwargs",
    "prior_log_prob",
    "reparameterize",
    "sample",
    "save",
    "scale_by_adam",
    "scale_by_learning_rate",
    "sgd",
    "stack",
    "sum_alpha",
    "to_module",
    "train",
    "train_many",
    "unstack",
]


def test_all_is_pinned_and_sorted():
    assert list(vaefunc.__all__) == PUBLIC
    assert list(vaefunc.__all__) == sorted(vaefunc.__all__)


def test_the_core_contract_names_are_public():
    """The names issue 2 fixes: these must never disappear."""
    contract = {"init", "train", "encode", "decode", "reparameterize", "kl_normal", "elbo", "sample", "adam",
                "apply_updates", "Optimizer", "NonFiniteLossError"}  # fmt: skip
    assert contract <= set(vaefunc.__all__)


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_has_a_docstring(name):
    obj = getattr(vaefunc, name)
    doc = inspect.getdoc(obj)
    assert doc and doc.strip(), f"vaefunc.{name} has no docstring"
    if inspect.isclass(obj) and hasattr(obj, "_fields"):
        # A NamedTuple without a docstring gets "Name(field, ...)": that is not documentation.
        assert doc != f"{name}({', '.join(obj._fields)})", f"vaefunc.{name} has only the generated docstring"
    summary = doc.splitlines()[0]
    assert summary.endswith((".", ":")) or len(doc.splitlines()) > 1, f"vaefunc.{name}: {summary!r}"
    assert obj.__module__.startswith("vaefunc"), f"vaefunc.{name} comes from {obj.__module__}"


def test_version():
    assert isinstance(vaefunc.__version__, str) and vaefunc.__version__.count(".") >= 1


def _activation_entry_points():
    """Every public way to run the network, called with a given activation on tiny inputs."""
    import torch

    from vaefunc import metrics, pictures, priors, sweep, traversal

    params = vaefunc.init((12,), latent_dim=2, hidden=(4,), seed=0)
    g = torch.Generator().manual_seed(0)
    x, eps = torch.rand(4, 12, generator=g), torch.randn(4, 2, generator=g)
    z = eps
    return {
        "encode": lambda a: vaefunc.encode(params, x, activation=a),
        "decode": lambda a: vaefunc.decode(params, z, activation=a),
        "sample": lambda a: vaefunc.sample(params, 2, activation=a),
        "elbo": lambda a: vaefunc.elbo(params, x, eps, activation=a),
        "iwae": lambda a: vaefunc.iwae(params, x, eps[None], activation=a),
        "log_weights": lambda a: vaefunc.log_weights(params, x, eps[None], activation=a),
        "log_likelihood": lambda a: vaefunc.log_likelihood(params, x, k=2, activation=a),
        "prior_log_prob": lambda a: priors.prior_log_prob(params, z, activation=a),
        "make_loss": lambda a: vaefunc.make_loss(activation=a),
        "make_elbo_loss": lambda a: vaefunc.make_elbo_loss(activation=a),
        "TrainConfig": lambda a: vaefunc.TrainConfig(activation=a),
        "train": lambda a: vaefunc.train(params, x, epochs=1, batch_size=2, progress=False, activation=a),
        "train_many": lambda a: vaefunc.train_many(vaefunc.init_many(2, (12,), latent_dim=2, hidden=(4,)), x,
                                                   epochs=1, batch_size=2, progress=False, activation=a),
        "to_module": lambda a: vaefunc.to_module(params, activation=a),
        "dataset_elbo": lambda a: metrics.dataset_elbo(params, x, activation=a),
        "active_units": lambda a: metrics.active_units(params, x, activation=a),
        "anomaly_score": lambda a: vaefunc.anomaly_score(params, x, k=2, activation=a),
        "traversal": lambda a: traversal.traversal(params, x[0], activation=a),
        "pictures.traversal": lambda a: pictures.traversal(params, (1, 3, 4), activation=a),
        "reconstructions": lambda a: pictures.reconstructions(params, x.reshape(4, 1, 3, 4), activation=a),
        "rate_distortion": lambda a: sweep.rate_distortion(vaefunc.init_many(2, (12,), latent_dim=2, hidden=(4,)),
                                                           x, activation=a),
    }  # fmt: skip


ENTRY_POINTS = list(_activation_entry_points())


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_bad_activation_names_are_rejected_before_any_layer_runs(name, monkeypatch):
    import torch.nn.functional as F

    calls = _activation_entry_points()
    calls[name]("tanh")  # a good name runs
    ran = []
    real = F.linear
    monkeypatch.setattr(F, "linear", lambda *a, **k: ran.append(1) or real(*a, **k))
    for bad in ("sigmoid", "ReLU", None):
        with pytest.raises(ValueError, match=r"activation must be one of \('relu', 'tanh', .*\); got " + repr(bad)):
            calls[name](bad)
    assert not ran, f"{name} ran a layer before rejecting the activation"
