"""The params-first functions of vaefunc 0.1, kept working on top of the :class:`vaefunc.VAE` spec.

``vaefunc.elbo(params, x, eps, activation="tanh")`` and its siblings take a
model's static choices as keywords. Each builds the spec those keywords and the
params' keys and shapes describe (:func:`vaefunc._resolve.spec_of`, cached) and runs
the spec's method, which checks its inputs (:func:`vaefunc._values.call_inputs`):
the numbers and the errors are the spec's. Write new code against the spec::

    model = vaefunc.VAE((784,), latent_dim=20, activation="tanh")
    params = model.init(seed=0)
    model.elbo(params, x, eps)                  # was vaefunc.elbo(params, x, eps, activation="tanh")

This is the top floor of the package: it imports the spec and the modules
below it, and nothing below imports it. The 0.1 names keep their 0.1 paths
(``vaefunc.losses.elbo``, ``vaefunc.priors.init_prior``, ...): :data:`OLD_PATHS`
lists them, and they are attached to those modules when vaefunc is imported.
``vaefunc.model`` is this module's 0.1 name. ``labels`` is the name of a
conditional model's labels everywhere; ``y`` is its older name, still taken.

Axis letters: b batch, d data features, k importance samples, z latent, n classes.
"""

from __future__ import annotations

import copy
import importlib
import math
import sys
import types
import warnings
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import Tensor

from . import _check, estimators, likelihoods, losses, presets, priors
from ._types import Params
from .layout import architecture
from .layout import data_dim as data_dim
from .layout import latent_dim as latent_dim
from .likelihoods import LOGSTD_KEY, check_likelihood
from .nn import ACTIVATIONS
from .optim import adam
from .schedules import KLSchedule, iwae_paper_lr
from ._resolve import resolve, spec_of
from .spec import VAE

Labels = Tensor | None

# ---------------------------------------------------------------- the network (vaefunc.model)


def init(input_shape: int | Sequence[int], *, latent_dim: int = 20, hidden: Sequence[int] = (400,), seed: int = 0,
         dtype: torch.dtype = torch.float32, device: torch.device | str | None = None, arch: str = "mlp",
         channels: Sequence[int] | None = None, n_classes: int | None = None) -> Params:  # fmt: skip
    """Fresh VAE params: ``VAE(input_shape, latent_dim=..., ...).init(seed, dtype=..., device=...)``.

    Example:
        >>> init((784,), latent_dim=20, hidden=(400,), seed=0)["encoder.0.weight"].shape
        torch.Size([400, 784])
    """
    fields: dict[str, Any] = {"latent_dim": latent_dim, "hidden": hidden, "arch": arch, "channels": channels,
                              "n_classes": 0 if n_classes is None else n_classes}  # the spec checks and normalizes them
    return VAE(cast(Any, input_shape), **fields).init(seed, dtype=dtype, device=device)


def encode(params: Params, x: Tensor, labels: Labels = None, *, activation: str = "relu",
           y: Labels = None) -> tuple[Tensor, Tensor]:  # fmt: skip
    """q(z|x[, y]) = N(mu, diag exp(logvar)): :meth:`vaefunc.VAE.encode`; x (b, ...) -> mu, logvar (b, z)."""
    return spec_of(params, activation=activation).encode(params, x, _check.renamed(labels, y, new="labels", old="y"))


def decode(params: Params, z: Tensor, labels: Labels = None, *, activation: str = "relu",
           y: Labels = None) -> Tensor:  # fmt: skip
    """The decoder's output (logits, or the Gaussian mean): :meth:`vaefunc.VAE.decode`; (b, z) -> (b, d)
    or (b, c, h, w)."""
    return spec_of(params, activation=activation).decode(params, z, _check.renamed(labels, y, new="labels", old="y"))


def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    """z = mu + exp(logvar / 2) * eps (broadcasting; eps (k, b, z) gives k samples per example)."""
    return VAE.reparameterize(mu, logvar, eps)


def sample(params: Params, n: int, *, seed: int = 0, likelihood: str = "bernoulli",
           labels: int | Sequence[int] | Tensor | None = None, activation: str = "relu",
           model: VAE | None = None) -> Tensor:  # fmt: skip
    """n decoder means of draws from the prior: :meth:`vaefunc.VAE.sample` ((n, d) for params alone,
    which do not record an image shape)."""
    model = resolve(params, model, likelihood=likelihood, activation=activation)
    return model.sample(params, n, seed=seed, labels=labels)


def input_shape(params: Params) -> tuple[int, ...]:
    """The shape of one example: (d,) for an MLP, (c, h, w) for a conv VAE."""
    return architecture(params).input_shape


def n_classes(params: Params) -> int:
    """The number of label classes of a conditional VAE; 0 when it is unconditional."""
    return architecture(params).n_classes


def macs_per_example(params: Params) -> int:
    """Multiply-accumulates of one encoder and one decoder pass: :meth:`vaefunc.VAE.macs_per_example`."""
    return spec_of(params).macs_per_example()


def flat_features(params: Params, out: Tensor) -> Tensor:
    """The decoder's output as flat features: (..., c, h, w) -> (..., d) for conv; MLP output as it is."""
    return out if architecture(params).arch == "mlp" else out.flatten(-3)


# ---------------------------------------------------------------- bounds and losses (vaefunc.losses)


def elbo_parts(params: Params, x: Tensor, eps: Tensor, *, likelihood: str = "bernoulli",
               obs_std: float | Tensor = 1.0, kl: str = "auto", per_dim: bool = False, y: Labels = None,
               activation: str = "relu") -> tuple[Tensor, Tensor]:  # fmt: skip
    """:func:`vaefunc.losses.example_terms` of the spec the params and keywords describe (one example)."""
    model = spec_of(params, likelihood=likelihood, obs_std=obs_std, activation=activation)
    return losses.example_terms(model, params, x, eps, y, kl=kl, per_dim=per_dim)


def elbo_terms(params: Params, x: Tensor, eps: Tensor, *, likelihood: str = "bernoulli",
               obs_std: float | Tensor = 1.0, kl: str = "auto", per_dim: bool = False, y: Labels = None,
               activation: str = "relu") -> tuple[Tensor, Tensor]:  # fmt: skip
    """The single-sample ELBO's terms rec, kl (b,) each (kl (b, z) with ``per_dim``), unchecked:
    :func:`vaefunc.losses.single_sample_terms` (:meth:`vaefunc.VAE.elbo_terms` checks its inputs)."""
    model = spec_of(params, likelihood=likelihood, obs_std=obs_std, activation=activation)
    return losses.single_sample_terms(model, params, x, eps, y, kl=kl, per_dim=per_dim)


def elbo(params: Params, x: Tensor, eps: Tensor, *, beta: float | Tensor = 1.0, likelihood: str = "bernoulli",
         obs_std: float | Tensor = 1.0, kl: str = "auto", y: Labels = None, activation: str = "relu",
         labels: Labels = None) -> Tensor:  # fmt: skip
    """Per-example single-sample ELBO, log p(x|z) - beta * KL(q(z|x) || p(z)), in nats: (b,).

    :meth:`vaefunc.VAE.elbo` of the spec the params' shapes and the keywords
    ``likelihood``, ``obs_std``, ``activation`` describe; x (b, ...), eps (b, z),
    ``labels`` (``y``) a conditional model's, int (b,) or one-hot (b, n).

    Example:
        >>> elbo(init((784,), latent_dim=20), torch.rand(8, 784), torch.randn(8, 20)).shape
        torch.Size([8])
    """
    model = spec_of(params, likelihood=likelihood, obs_std=obs_std, activation=activation)
    return model.elbo(params, x, eps, _check.renamed(labels, y, new="labels", old="y"), beta=beta, kl=kl)


def make_elbo_loss(*, likelihood: str = "bernoulli", obs_std: float = 1.0, activation: str = "relu"):
    """``loss_fn(params, x, eps, beta, *, y=None) -> (loss, metrics)``: -mean_b(rec - beta * kl) of the spec
    the params and keywords describe (``model.loss()`` is the same loss, taking ``capacity`` too)."""
    loss = make_loss(likelihood=likelihood, obs_std=obs_std, activation=activation)

    def loss_fn(params: Params, x: Tensor, eps: Tensor, beta: Tensor, *, y: Labels = None):
        return loss(params, x, eps, beta, torch.zeros_like(beta), y=y)

    return loss_fn


def make_loss(*, objective: str = "elbo", k: int = 1, likelihood: str = "bernoulli", obs_std: float = 1.0,
              kl_schedule: KLSchedule | None = None, activation: str = "relu"):  # fmt: skip
    """:func:`vaefunc.losses.training_loss` of the spec the params and keywords describe, built at each call:
    ``loss_fn(params, x, eps, beta, capacity, *, y=None) -> (loss, metrics)``; ``k`` is checked only
    (the loss reads it from eps)."""
    check_likelihood(likelihood)
    _check.choice("activation", activation, ACTIVATIONS)
    _check.positive_int("k", k)
    losses.check_objective(objective, kl_schedule)

    def loss_fn(params: Params, x: Tensor, eps: Tensor, beta: Tensor, capacity: Tensor, *, y: Labels = None):
        model = spec_of(params, likelihood=likelihood, obs_std=obs_std, activation=activation)
        return losses.training_loss(model, objective=objective, kl_schedule=kl_schedule)(params, x, eps, beta,
                                                                                         capacity, y)  # fmt: skip

    return loss_fn


# ---------------------------------------------------------------- importance sampling (vaefunc.estimators)


def log_weights(params: Params, x: Tensor, eps: Tensor, *, likelihood: str = "bernoulli",
                obs_std: float | Tensor = 1.0, y: Labels = None, activation: str = "relu",
                labels: Labels = None) -> Tensor:  # fmt: skip
    """log w = log p(x|z) + log p(z) - log q(z|x) at z = mu + sigma * eps, eps (k, b, z): (k, b);
    :meth:`vaefunc.VAE.log_weights` of the spec the params and keywords describe."""
    model = spec_of(params, likelihood=likelihood, obs_std=obs_std, activation=activation)
    return model.log_weights(params, x, eps, _check.renamed(labels, y, new="labels", old="y"))


def iwae(params: Params, x: Tensor, eps: Tensor, *, y: Labels = None, likelihood: str = "bernoulli",
         obs_std: float | Tensor = 1.0, activation: str = "relu", labels: Labels = None) -> Tensor:  # fmt: skip
    """The importance-weighted bound log (1/k) sum_i w_i per example, in nats, eps (k, b, z): (b,);
    :meth:`vaefunc.VAE.iwae` of the spec the params and keywords describe.

    Example:
        >>> iwae(init((784,), latent_dim=20), torch.rand(8, 784), torch.randn(5, 8, 20)).shape
        torch.Size([8])
    """
    model = spec_of(params, likelihood=likelihood, obs_std=obs_std, activation=activation)
    return model.iwae(params, x, eps, _check.renamed(labels, y, new="labels", old="y"))


def log_likelihood(params: Params, x: Tensor, *, y=None, k: int = 5000, seed: int = 0, chunk: int | None = None,
                   likelihood: str = "bernoulli", obs_std: float = 1.0, batch_size: int = 100,
                   activation: str = "relu", labels=None, model: VAE | None = None,
                   progress: bool | str = True, compile: bool | str = "auto",
                   autocast: str | None = "auto", threads: int | None = None) -> Tensor:  # fmt: skip
    """Importance-sampled log p(x) per example with k samples, in nats and bounded memory: (n,).

    :meth:`vaefunc.VAE.log_likelihood` (:func:`vaefunc.estimators.estimate_log_likelihood`) of
    ``model``, or of the spec the params and ``likelihood``, ``obs_std``, ``activation`` describe.

    Example:
        >>> log_likelihood(init((784,), latent_dim=20), torch.rand(10, 784), k=100).shape
        torch.Size([10])
    """
    model = resolve(params, model, likelihood=likelihood, obs_std=obs_std, activation=activation)
    labels = _check.renamed(labels, y, new="labels", old="y")
    return estimators.estimate_log_likelihood(model, params, x, labels, k=k, seed=seed, chunk=chunk,
                                              batch_size=batch_size, progress=progress, compile=compile,
                                              autocast=autocast, threads=threads)  # fmt: skip


# ---------------------------------------------------------------- priors and likelihoods


def prior_log_prob(params: Params, z: Tensor, *, activation: str = "relu") -> Tensor:
    """log p(z) under the model's prior: (..., z) -> (...,); :meth:`vaefunc.VAE.prior_log_prob`
    (``activation``: the encoder's, for the VampPrior)."""
    return spec_of(params, activation=activation).prior_log_prob(params, z)


def kl_monte_carlo(params: Params, mu: Tensor, logvar: Tensor, z: Tensor, *, activation: str = "relu") -> Tensor:
    """log q(z|x) - log p(z) at a sample z of q (unbiased for the KL, negative for some samples):
    (..., z) -> (...,); z broadcasts against mu. :func:`vaefunc.priors.kl_single_sample`."""
    return priors.kl_single_sample(spec_of(params, activation=activation), params, mu, logvar, z)


def init_prior(params: Params, kind: str, *, n_components: int = 10, seed: int = 0, scale: float = 1.0) -> Params:
    """A copy of ``params`` with the keys of a learnable prior (existing prior keys replaced).

    ``kind``: ``"normal"`` (removes any prior keys), ``"mog"`` (c means drawn
    from N(0, scale^2 I), unit variances, equal weights) or ``"vamp"`` (c
    pseudo-inputs drawn from U(0, 1)), c = ``n_components``, from a generator
    seeded with ``seed``. A spec with ``prior=`` makes the same keys in :meth:`vaefunc.VAE.init`.

    Example:
        >>> init_prior(init((784,), latent_dim=20), "vamp", n_components=50)["prior.pseudo_inputs"].shape
        torch.Size([50, 784])
    """
    if kind not in priors.PRIORS:
        raise ValueError(f"kind must be one of {priors.PRIORS}; got {kind!r}")
    if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
        raise ValueError(f"n_components must be a positive int; got {n_components!r}")
    base = {k: v for k, v in params.items() if not k.startswith("prior.")}
    if kind == "normal":
        return base
    a = architecture(params)
    return base | priors.prior_tensors(kind, n_components, a.latent_dim, math.prod(a.input_shape),
                                       params["decoder.0.weight"], seed=seed, scale=scale)  # fmt: skip


def obs_log_prob(params: Params, out: Tensor, x: Tensor, *, likelihood: str = "bernoulli",
                 obs_std: float | Tensor = 1.0) -> Tensor:  # fmt: skip
    """log p(x|z) from the decoder's output ``out``: (..., d) -> (...,); :meth:`vaefunc.VAE.log_px`
    (a ``"likelihood.logstd"`` in params replaces ``obs_std``)."""
    check_likelihood(likelihood)
    if likelihood == "gaussian" and LOGSTD_KEY in params:
        return likelihoods.gaussian_log_prob_logstd(out, x, params[LOGSTD_KEY])
    if likelihood == "gaussian":
        return likelihoods.gaussian_log_prob(out, x, obs_std)
    log_prob = likelihoods.bernoulli_log_prob if likelihood == "bernoulli" else likelihoods.continuous_bernoulli_log_prob
    return log_prob(out, x)


def init_obs_logstd(params: Params, *, per_pixel: bool = False, std: float = 1.0) -> Params:
    """A copy of ``params`` with a learnable Gaussian log-std ``"likelihood.logstd"`` = log(std): one
    global (0-d) or, ``per_pixel``, one per data feature (d,). A spec with ``learn_obs_std=`` makes it
    in :meth:`vaefunc.VAE.init`.

    Example:
        >>> init_obs_logstd(init((784,)), per_pixel=True)["likelihood.logstd"].shape
        torch.Size([784])
    """
    if not (isinstance(std, (int, float)) and math.isfinite(std) and std > 0):
        raise ValueError(f"std must be a positive finite number; got {std!r}")
    shape = (data_dim(params),) if per_pixel else ()
    return params | {LOGSTD_KEY: likelihoods.logstd_tensor(shape, std, params["decoder.0.weight"])}


# ---------------------------------------------------------------- presets in 0.1's layout (vaefunc.presets)


def _old_layout(setup: dict[str, Any]) -> dict[str, Any]:
    """A setup in vaefunc 0.1's layout: "init", "train" (with the model's choices), "optimizer"."""
    model, train = setup["model"], setup["train"]
    return {
        "description": setup["description"],
        "init": {"latent_dim": model["latent_dim"], "hidden": model["hidden"]},
        "train": {"objective": train["objective"], "k": train["k"], "batch_size": train["batch_size"],
                  "epochs": train["epochs"], "likelihood": model["likelihood"], "binarize": train["binarize"],
                  "activation": model["activation"]},
        "optimizer": {"name": "adam", "lr": "iwae-paper", "base_lr": train["lr"],
                      "stages": int(train["lr_schedule"].split(":")[1]), "b1": 0.9, "b2": 0.999,
                      "eps": train["adam_eps"]},
        "eval": setup["eval"],
        "paper_test_nll": setup["paper_test_nll"],
    }  # fmt: skip


PRESETS: dict[str, dict[str, Any]] = {name: _old_layout(setup) for name, setup in presets.SETUPS.items()
                                      if "top_latent_dim" not in setup["model"]}  # fmt: skip
"""Name -> preset in vaefunc 0.1's layout ("init", "train", "optimizer", "eval", "description"); 0.1 had
no second stochastic layer, so the two-layer setups are :func:`vaefunc.presets.preset`'s only."""


def preset_train_kwargs(name: str, n_train: int, **overrides: Any) -> dict[str, dict[str, Any]]:
    """The keyword arguments of :func:`init` and :func:`vaefunc.train` for a preset:
    ``{"init": {...}, "train": {...}}``, "train" holding an ``optimizer`` (:func:`vaefunc.adam` with the
    preset's lr schedule over epochs of n_train // batch_size steps); ``overrides`` replace train
    keywords (``batch_size`` also changes the schedule). :func:`vaefunc.presets.preset` gives a
    spec's arguments and a TrainConfig.

    Example:
        >>> kw = preset_train_kwargs("iwae-paper", n_train=60000)
        >>> result = vaefunc.train(init((784,), **kw["init"], seed=0), x_train, **kw["train"])
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    if isinstance(n_train, bool) or not isinstance(n_train, int) or n_train < 1:
        raise ValueError(f"n_train must be a positive int; got {n_train!r}")
    old = copy.deepcopy(PRESETS[name])
    train_kw = {**old["train"], **overrides}
    opt = old["optimizer"]
    lr = iwae_paper_lr(max(1, n_train // train_kw["batch_size"]), base=opt["base_lr"], stages=opt["stages"])
    train_kw["optimizer"] = adam(lr, b1=opt["b1"], b2=opt["b2"], eps=opt["eps"])
    return {"init": dict(old["init"]), "train": train_kw}


# ---------------------------------------------------------------- the 0.1 names at their 0.1 paths

OLD_PATHS = {
    losses: ("elbo", "elbo_parts", "elbo_terms", "make_elbo_loss", "make_loss"),
    estimators: ("iwae", "log_likelihood", "log_weights"),
    priors: ("init_prior", "kl_monte_carlo", "prior_log_prob"),
    likelihoods: ("init_obs_logstd", "obs_log_prob"),
    presets: ("PRESETS", "preset_train_kwargs"),
}
"""Module -> the 0.1 names it held, attached to it here: the modules below know only the spec-first functions."""
for _module, _names in OLD_PATHS.items():
    for _name in _names:
        setattr(_module, _name, globals()[_name])

RENAMED = {
    "vaefunc.training": {"fit": "fit_run", "should_compile": "compiles_for_params"},
    "vaefunc.distributed": {"setup": "join"},
}
"""Module -> {older name: its name now}: one meaning per name (``setup`` builds a training run,
``join`` joins torchrun's process group; ``should_compile`` is the rule in vaefunc.runners), the older
names still read, attached here."""
for _path, _renames in RENAMED.items():
    _target = importlib.import_module(_path)
    for _old, _new in _renames.items():
        setattr(_target, _old, getattr(_target, _new))


# ---------------------------------------------------------------- vaefunc.train, the module's old name


class _MovedModule(types.ModuleType):
    """A module's old dotted name, registered in ``sys.modules``: ``from vaefunc.train import setup``
    reads ``vaefunc.training.setup``, with a DeprecationWarning. The attribute ``vaefunc.train`` stays
    the function (a module at that path would rebind it on its first import)."""

    def __init__(self, old: str, new: str) -> None:
        super().__init__(old, f"Deprecated: the module {old} is now {new}.")
        self.__dict__["_new"] = new

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        new = self.__dict__["_new"]
        warnings.warn(f"the module {self.__name__} is now {new}: import {name} from {new}",
                      DeprecationWarning, stacklevel=2)  # fmt: skip
        return getattr(importlib.import_module(new), name)

    def __dir__(self) -> list[str]:
        return dir(importlib.import_module(self.__dict__["_new"]))


def register_moved_module(old: str, new: str) -> None:
    """Make ``import old`` / ``from old import x`` give ``new``'s names (with a DeprecationWarning)."""
    sys.modules.setdefault(old, _MovedModule(old, new))


def moved_attribute(package: str, name: str, module: str) -> Any:
    """``package.name`` for a name that now lives only in ``module`` (an implementation detail taken off
    the front door): the object, with a DeprecationWarning naming where it lives."""
    warnings.warn(f"{package}.{name} is not part of {package}'s API: import it from {module}",
                  DeprecationWarning, stacklevel=3)  # fmt: skip
    return getattr(importlib.import_module(module), name)
