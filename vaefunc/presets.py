"""Named training setups from the literature: a model spec and a training config.

A preset is plain data in the two layouts every run uses: ``"model"`` holds
:class:`vaefunc.VAE` fields (all but the input shape, which is the data's) and
``"train"`` :class:`vaefunc.TrainConfig` fields, so a run's ``config.json``, a
config file and a preset read alike. :func:`preset` turns one into a spec's
keyword arguments and a ``TrainConfig``.

``"iwae-paper"``: the one-stochastic-layer MNIST setting of Burda, Grosse and
Salakhutdinov (2015), section 5: two deterministic tanh layers of 200 units, 50
latent dimensions, Bernoulli likelihood on dynamically binarized digits, the
IWAE bound with k = 50, Adam (b1 = 0.9, b2 = 0.999, eps = 1e-4), batch 20, and
3^i epochs at lr = 1e-3 * 10^(-i/7) for i = 0..7 (3,280 epochs).
``"iwae-paper-vae"`` is the same with the ELBO (the paper's VAE column);
``"iwae-paper-2-layer"`` and ``"iwae-paper-2-layer-vae"`` are the paper's
two-stochastic-layer model (784-100-100-[z1 100]-50-50-[z2 50], tanh) in the
same setting.

``vaefunc.presets.PRESETS`` and ``preset_train_kwargs`` are the layout of vaefunc 0.1
(``"init"``, ``"train"`` and ``"optimizer"`` sections), kept as they were in
:mod:`vaefunc.legacy`.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

from .config import TrainConfig
from .schedules import iwae_paper_epochs

SETUPS: dict[str, dict[str, Any]] = {
    "iwae-paper": {
        "description": "Burda et al. 2015, MNIST, one stochastic layer: 784-200-200-50 tanh, IWAE k=50, Adam, "
        "3^i-epoch lr schedule",
        "model": {"latent_dim": 50, "hidden": (200, 200), "activation": "tanh", "likelihood": "bernoulli"},
        "train": {"objective": "iwae", "k": 50, "batch_size": 20, "epochs": iwae_paper_epochs(8),
                  "binarize": "dynamic", "lr": 1e-3, "lr_schedule": "iwae-paper:8", "adam_eps": 1e-4},
        "eval": {"k": 5000},  # the paper's test log-likelihood estimate
        "paper_test_nll": 84.78,  # their table 1, IWAE k=50, one stochastic layer
    },
}  # fmt: skip
SETUPS["iwae-paper-vae"] = {
    **SETUPS["iwae-paper"],
    "description": "Burda et al. 2015, MNIST, one stochastic layer: the VAE baseline (ELBO, k=1), same setting",
    "train": {**SETUPS["iwae-paper"]["train"], "objective": "elbo", "k": 1},
    "paper_test_nll": 86.76,  # their table 1, VAE k=1
}
"""Name -> setup: "model" (VAE fields), "train" (TrainConfig fields), "eval", "description"."""


class Preset(NamedTuple):
    """A named setup ready to use: ``VAE(input_shape, **preset.model)`` and ``preset.config``."""

    model: dict[str, Any]  # VAE keyword arguments (no input_shape)
    config: TrainConfig
    eval: dict[str, Any]  # how the paper evaluated it (e.g. {"k": 5000})
    description: str


def preset(name: str, **overrides: Any) -> Preset:
    """A named setup, with TrainConfig fields in ``overrides`` replacing the preset's.

    Example:
        >>> p = preset("iwae-paper", epochs=10)
        >>> model = vaefunc.VAE((784,), **p.model)
        >>> result = vaefunc.train(model.init(seed=0), x_train, model=model, config=p.config)
    """
    if name not in SETUPS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(SETUPS)}")
    setup = copy.deepcopy(SETUPS[name])
    config = TrainConfig(**setup["train"]).replace(**overrides)
    return Preset(setup["model"], config, setup["eval"], setup["description"])


# The paper's two-stochastic-layer model (vaefunc 0.1's layout, :data:`vaefunc.legacy.PRESETS`, has no second layer).
SETUPS["iwae-paper-2-layer"] = {
    **SETUPS["iwae-paper"],
    "description": "Burda et al. 2015, MNIST, two stochastic layers: 784-100-100-[z1 100]-50-50-[z2 50] tanh, "
    "IWAE k=50, Adam, 3^i-epoch lr schedule",
    "model": {**SETUPS["iwae-paper"]["model"], "latent_dim": 100, "hidden": (100, 100), "top_latent_dim": 50,
              "top_hidden": (50, 50)},
    "paper_test_nll": 82.90,  # their table 1, IWAE k=50, two stochastic layers
}  # fmt: skip
SETUPS["iwae-paper-2-layer-vae"] = {
    **SETUPS["iwae-paper-2-layer"],
    "description": "Burda et al. 2015, MNIST, two stochastic layers: the VAE baseline (ELBO, k=1), same setting",
    "train": SETUPS["iwae-paper-vae"]["train"],
    "paper_test_nll": 85.33,  # their table 1, VAE k=1, two stochastic layers
}
