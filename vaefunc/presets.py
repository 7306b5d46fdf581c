"""Named training setups from the literature, as plain dicts.

A preset holds the keyword arguments of :func:`vaefunc.init` ("init") and of
:func:`vaefunc.train` ("train"), and a description of the optimizer
("optimizer"), all plain data, so a command line can show and override them.
:func:`preset_train_kwargs` turns one into ready keyword arguments, building
the optimizer (whose learning-rate schedule depends on the number of steps per
epoch, hence on the data size).

``"iwae-paper"``: the one-stochastic-layer MNIST setting of Burda, Grosse and
Salakhutdinov (2015), section 5: two deterministic tanh layers of 200 units, 50
latent dimensions, Bernoulli likelihood on dynamically binarized digits, the
IWAE bound with k = 50, Adam (b1 = 0.9, b2 = 0.999, eps = 1e-4), batch 20, and
3^i epochs at lr = 1e-3 * 10^(-i/7) for i = 0..7 (3,280 epochs).
``"iwae-paper-vae"`` is the same with the ELBO (the paper's VAE column).

The tanh is the ``activation`` train keyword (a param dict does not record
it): evaluate a model trained with a preset with the same ``activation=``, e.g.
``vaefunc.log_likelihood(params, x, activation=kw["train"]["activation"])``;
the command line saves it in the run's config and its ``eval`` reads it back.
"""

from __future__ import annotations

import copy
from typing import Any

from .optim import adam
from .schedules import iwae_paper_epochs, iwae_paper_lr

_IWAE_PAPER: dict[str, Any] = {
    "description": "Burda et al. 2015, MNIST, one stochastic layer: 784-200-200-50 tanh, IWAE k=50, Adam, "
    "3^i-epoch lr schedule",
    "init": {"latent_dim": 50, "hidden": (200, 200)},
    "train": {
        "objective": "iwae",
        "k": 50,
        "batch_size": 20,
        "epochs": iwae_paper_epochs(8),  # 3,280
        "likelihood": "bernoulli",
        "binarize": "dynamic",
        "activation": "tanh",  # the paper's deterministic layers
    },
    "optimizer": {"name": "adam", "lr": "iwae-paper", "base_lr": 1e-3, "stages": 8, "b1": 0.9, "b2": 0.999, "eps": 1e-4},
    "eval": {"k": 5000},  # the paper's test log-likelihood estimate
    "paper_test_nll": 84.78,  # their table 1, IWAE k=50, one stochastic layer
}

PRESETS: dict[str, dict[str, Any]] = {
    "iwae-paper": _IWAE_PAPER,
    "iwae-paper-vae": {
        **_IWAE_PAPER,
        "description": "Burda et al. 2015, MNIST, one stochastic layer: the VAE baseline (ELBO, k=1), same setting",
        "train": {**_IWAE_PAPER["train"], "objective": "elbo", "k": 1},
        "paper_test_nll": 86.76,  # their table 1, VAE k=1
    },
}
"""Name -> preset (a dict with "init", "train", "optimizer", "eval" and a "description")."""


def preset_train_kwargs(name: str, n_train: int, **overrides: Any) -> dict[str, dict[str, Any]]:
    """The keyword arguments of :func:`vaefunc.init` and :func:`vaefunc.train` for a preset.

    Args:
        name: a key of :data:`PRESETS`.
        n_train: the number of training examples (the lr schedule counts epochs
            in steps of n_train // batch_size).
        overrides: train keyword arguments that replace the preset's (e.g.
            ``epochs=10``, ``seed=1``); ``batch_size`` also changes the schedule.

    Returns:
        ``{"init": {...}, "train": {...}}``; "train" holds an ``optimizer``
        (:func:`vaefunc.adam` with the preset's lr schedule), so it is passed
        as ``vaefunc.train(params, data, **kwargs["train"])``.

    Example:
        >>> kw = preset_train_kwargs("iwae-paper", n_train=60000)
        >>> params = vaefunc.init((784,), **kw["init"], seed=0)
        >>> result = vaefunc.train(params, x_train, **kw["train"])   # tanh hidden layers
        >>> nll = -vaefunc.log_likelihood(result.params, x_test, k=5000, activation=kw["train"]["activation"])
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    if isinstance(n_train, bool) or not isinstance(n_train, int) or n_train < 1:
        raise ValueError(f"n_train must be a positive int; got {n_train!r}")
    preset = copy.deepcopy(PRESETS[name])
    train_kw = {**preset["train"], **overrides}
    opt = preset["optimizer"]
    steps_per_epoch = max(1, n_train // train_kw["batch_size"])
    lr = iwae_paper_lr(steps_per_epoch, base=opt["base_lr"], stages=opt["stages"])
    train_kw["optimizer"] = adam(lr, b1=opt["b1"], b2=opt["b2"], eps=opt["eps"])
    return {"init": dict(preset["init"]), "train": train_kw}
