"""The public API: vaefunc.__all__ is pinned, and every public name is documented."""

from __future__ import annotations

import inspect

import pytest

import vaefunc

PUBLIC = [
    "AdamState",
    "Checkpoint",
    "CheckpointError",
    "EnsembleResult",
    "GraphedStep",
    "KLSchedule",
    "NonFiniteLossError",
    "Optimizer",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "VAEModule",
    "adam",
    "anomaly_score",
    "apply_updates",
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
    "preset_train_kwargs",
    "prior_log_prob",
    "reparameterize",
    "sample",
    "save",
    "scale_by_adam",
    "scale_by_learning_rate",
    "sgd",
    "stack",
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
