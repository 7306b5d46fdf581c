"""``VAE``: the frozen spec of a model, and its pure functions of params.

A spec holds every static choice of a model: the input shape, the latent
size, the hidden widths, the architecture and its channels, the number of
classes, the hidden activation, the likelihood with its fixed or learned
standard deviation, and the prior. It is a frozen, hashable dataclass, so it
is a compile-time constant (step caches key on it) and is saved beside the
params in checkpoints and in a run's ``config.json``. The params stay a plain
dict of tensors with ``state_dict`` keys; the methods are pure functions of
them, params first, as a Flax module's ``apply`` is::

    model = vaefunc.VAE((784,), latent_dim=50, hidden=(200, 200), activation="tanh")
    params = model.init(seed=0)
    mu, logvar = model.encode(params, x)
    e = model.elbo(params, x, eps)                    # (b,)

A param dict records its shapes but not the activation or the likelihood:
:meth:`VAE.from_params` reads what the shapes say and takes the rest as
arguments (defaults: ReLU, Bernoulli).

Axis letters: b batch, d data features, k importance samples, z latent, n classes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import KW_ONLY, dataclass
from typing import Any

import torch
from torch import Tensor

from . import _check, _fields, _values, custom, estimators, latents, likelihoods, losses, network, priors
from ._fields import ARCHS as ARCHS
from ._fields import CONV_CHANNELS as CONV_CHANNELS
from ._fields import LEARN_OBS_STD as LEARN_OBS_STD
from ._fields import LIKELIHOODS as LIKELIHOODS
from ._fields import POSTERIORS as POSTERIORS
from ._fields import PRIORS as PRIORS
from ._fields import check_output_fields as check_output_fields
from ._types import Params

@dataclass(frozen=True)
class VAE:
    """Every static choice of a VAE; its methods are pure functions of params.

    Args:
        input_shape: one example's shape, e.g. ``(784,)`` or ``(1, 28, 28)``
            (an int means ``(d,)``). ``arch="conv"`` needs square (c, h, w).
        latent_dim: z.
        hidden: the encoder's hidden linear widths (for conv: after the
            convolutions); the decoder mirrors them.
        arch: ``"mlp"`` or ``"conv"`` (layouts in :mod:`vaefunc.network`).
        channels: conv only: one width per stride-2 convolution; default:
            halve while the size is even and at least 8, at most 4 layers,
            widths (32, 32, 64, 64).
        kernel: conv only: the (even) kernel size.
        n_classes: a conditional VAE reads a one-hot label of this many
            classes in both halves; 0: unconditional.
        activation: the hidden activation, one of ``vaefunc.nn.ACTIVATIONS``.
        likelihood: ``"bernoulli"``, ``"gaussian"`` or ``"continuous_bernoulli"``.
        obs_std: the Gaussian's standard deviation (the initial one when learned).
        learn_obs_std: learn the Gaussian's log-std: ``"global"`` (one),
            ``"pixel"`` (one per feature) or None.
        prior: ``"normal"``, ``"mog"`` (a learned mixture of Gaussians) or
            ``"vamp"`` (the VampPrior).
        prior_components: mixture components or pseudo-inputs (0 for "normal").
        semi_supervised: Kingma et al.'s (2014) M2: a classifier q(y|x) beside the
            conditional encoder q(z|x, y) and decoder p(x|y, z), trained on
            labelled and unlabelled examples (label -1) at once; needs ``n_classes``.
        posterior: q(z|x)'s family: ``"gaussian"`` (diagonal) or ``"iaf"``, that
            Gaussian's sample moved by ``flow_steps`` inverse autoregressive flow
            steps (:mod:`vaefunc.flows`), each a MADE of ``flow_hidden`` widths
            (defaults: 2 steps, one hidden layer of 2 * latent_dim).
        top_latent_dim: a second stochastic layer z2 of this size (0: none), the
            IWAE paper's two-layer model q(z1|x) q(z2|z1), p(z2) p(z1|z2) p(x|z1)
            (:mod:`vaefunc.latents`); ``latent_dim`` is z1's size, the prior is
            p(z2), and eps has ``latent_dim + top_latent_dim`` values per sample.
        top_hidden: the hidden widths of q(z2|z1) (p(z1|z2) mirrors them);
            default (top_latent_dim, top_latent_dim) as in the paper.
        encoder, decoder, classifier: set by :meth:`custom` (``arch="custom"``):
            the user's networks (:class:`vaefunc.custom.Network`).

    Example:
        >>> model = VAE((1, 28, 28), latent_dim=16, arch="conv", n_classes=10)
        >>> params = model.init(seed=0)
        >>> model.sample(params, 4, labels=[0, 1, 2, 3]).shape
        torch.Size([4, 1, 28, 28])
    """

    input_shape: tuple[int, ...]
    _: KW_ONLY
    latent_dim: int = 20
    hidden: tuple[int, ...] = (400,)
    arch: str = "mlp"
    channels: tuple[int, ...] | None = None
    kernel: int = 4
    n_classes: int = 0
    activation: str = "relu"
    likelihood: str = "bernoulli"
    obs_std: float = 1.0
    learn_obs_std: str | None = None
    prior: str = "normal"
    prior_components: int = 10
    semi_supervised: bool = False
    posterior: str = "gaussian"
    flow_steps: int | None = None
    flow_hidden: tuple[int, ...] | None = None
    top_latent_dim: int = 0
    top_hidden: tuple[int, ...] | None = None
    encoder: custom.Network | None = None
    decoder: custom.Network | None = None
    classifier: custom.Network | None = None
    layout: network.Layout = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, value in _fields.normalized(self).items():
            object.__setattr__(self, name, value)
        # The network's param keys in order, and their shapes: computed once per spec, not a field.
        object.__setattr__(self, "layout", network.layout(self))

    # ------------------------------------------------------------ what it is

    @classmethod
    def custom(cls, *, encoder: Any, decoder: Any, input_shape: int | tuple[int, ...], latent_dim: int,
               classifier: Any = None, **fields: Any) -> VAE:  # fmt: skip
        """A spec over your own networks: ``torch.nn.Module``s, or pure functions with their params.

        The networks follow the contract of :mod:`vaefunc.custom`: the encoder
        maps x (b, *input_shape) to (b, 2 * latent_dim) (mu, then logvar) or
        to a pair (mu, logvar); the decoder maps z (b, latent_dim) to the
        likelihood's parameter, (b, d) or (b, *input_shape); a conditional
        model's networks get the one-hot label (b, n) as a second argument; a
        semi-supervised model needs ``classifier`` (x -> logits (b, n)). Each
        is run on a probe batch here, so a wrong output shape or dtype is an
        error naming the network before any training. Every other field
        (likelihood, prior, n_classes, posterior, top_latent_dim, ...) is as
        for ``VAE(...)``.

        Args:
            encoder, decoder, classifier: an ``nn.Module`` (run by
                ``torch.func.functional_call``; vaefunc never mutates it), or a
                pair ``(apply, params)`` / ``(apply, init)`` of a pure
                ``apply(params, *inputs)``, its initial params and/or an
                ``init(seed) -> params``.

        Example:
            >>> from torch import nn
            >>> enc = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))
            >>> dec = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 64), nn.Unflatten(1, (1, 8, 8)))
            >>> model = VAE.custom(encoder=enc, decoder=dec, input_shape=(1, 8, 8), latent_dim=4)
            >>> sorted(model.init(seed=0))[:2]
            ['decoder.0.bias', 'decoder.0.weight']
        """
        nets: dict[str, Any] = {role: custom.as_network(role, net) for role, net in
                (("encoder", encoder), ("decoder", decoder), ("classifier", classifier)) if net is not None}  # fmt: skip
        taken = sorted(set(fields) & {"arch", "hidden", "channels", "kernel"})
        if taken:
            raise TypeError(f"a custom model's networks are its own; {taken} are for the built-in ones")
        shape: Any = input_shape  # an int is (d,): the spec normalizes it
        model = cls(shape, latent_dim=latent_dim, arch="custom", hidden=(), **fields, **nets)
        custom.probe(model)
        return model

    @property
    def data_dim(self) -> int:
        """d, the number of input features (c * h * w for images)."""
        return math.prod(self.input_shape)

    @property
    def noise_dim(self) -> int:
        """The noise one sample of the latents reads: eps (..., noise_dim) = latent_dim + top_latent_dim."""
        return self.latent_dim + self.top_latent_dim

    @property
    def prior_dim(self) -> int:
        """The size of the latent the prior is over: z, or z2 of a two-layer model."""
        return self.top_latent_dim or self.latent_dim

    @property
    def closed_form_kl(self) -> bool:
        """Whether KL(q(z|x) || p(z)) has a closed form: one Gaussian layer and the N(0, I) prior."""
        return self.posterior == "gaussian" and not self.top_latent_dim and self.prior == "normal"

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every key :meth:`init` makes, with its shape: the network, the prior's and the likelihood's."""
        return self.layout.shapes | priors.param_shapes(self) | likelihoods.param_shapes(self)

    def macs_per_example(self) -> int:
        """Multiply-accumulates of one encoder and one decoder pass over one example."""
        return network.macs_per_example(self)

    def check(self, params: Any, *, stacked: bool = False) -> None:
        """Raise TypeError/ValueError unless ``params`` are exactly this model's, one dtype, one device.

        Args:
            stacked: the params of an ensemble: every leaf has one extra leading axis (m, ...).
        """
        _check.params(self.param_shapes(), params, stacked=stacked)

    def _input(self, name: str, value: Tensor, params: Params, labels: Any = None, need: Any = None) -> Tensor:
        """A method's input checked, with the params' shapes against this spec's (params of another
        model would run and give wrong numbers) and int labels' range where they can be read. Once
        per call, on shapes only (no host sync but the labels' range, which stands aside under transforms)."""
        if isinstance(params, dict) and params:
            _check.param_shapes(_fields.shapes_of(self), params, need or _READS[name])
        if labels is not None and self.n_classes:
            _check.label_range(labels, self.n_classes)
        return _values.method_input(self, name, value, params)

    def _bound_inputs(self, params: Params, x: Tensor, eps: Tensor, labels: Any) -> tuple[Tensor, Tensor, Any]:
        """x, eps and labels of a bound, checked by :func:`vaefunc._values.call_inputs` (the one validator of
        the bounds, for the methods and the params-first functions alike): x and eps finite, x in [0, 1]
        for the Bernoulli likelihoods, labels given exactly for a conditional model and in range. The
        value checks stand aside under torch.compile, vmap and grad (:func:`vaefunc._check.readable`)."""
        x = self._input("x", x, params, need=_ALL)
        return x, eps, _values.call_inputs(self, params, x, eps, labels)

    # ------------------------------------------------------------ params

    def init(self, seed: int = 0, *, dtype: torch.dtype = torch.float32, device=None) -> Params:
        """Fresh params: the network (as ``nn.Linear``/``nn.Conv2d`` would draw it), then the
        prior's and the learned likelihood's, all from ``seed``.

        Example:
            >>> VAE((784,), latent_dim=20).init(seed=0)["encoder.0.weight"].shape
            torch.Size([400, 784])
        """
        seed = _check.seed(seed)
        _check.float_dtype(dtype)
        _check.param_bytes(self.param_shapes(), dtype)
        gen = torch.Generator(device=device or "cpu").manual_seed(seed)
        params = network.init(self, gen, dtype=dtype, device=device)
        params = priors.init_params(self, params, seed=seed)
        return likelihoods.init_params(self, params)

    @classmethod
    def from_params(cls, params: Params, **choices: Any) -> VAE:
        """The spec a param dict's keys and shapes describe, with the choices they cannot record.

        The architecture, input shape (flat (d,) for an MLP), latent size,
        hidden widths, channels, classes, prior and learned log-std are read
        from the params; ``activation`` (default ReLU), ``likelihood`` (default
        Bernoulli, or Gaussian when the params hold a learned log-std),
        ``obs_std`` and ``input_shape`` (an image shape with d features for an
        MLP) are taken from ``choices``.

        Example:
            >>> VAE.from_params(VAE((784,), hidden=(200, 200)).init(), activation="tanh").hidden
            (200, 200)
        """
        return cls(**_fields.read_fields(params, choices))

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready data (tuples as lists); :meth:`from_dict` reads it back.

        The fields of deeper models and custom networks are written only when
        set (an older spec's data is unchanged); a custom network is written
        as its name, ``{"custom": "ResidualEncoder"}``: its code is never
        saved, and :meth:`from_dict` takes it back from the caller.
        """
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        values = {k: v for k, v in values.items() if k not in _fields.OPTIONAL or v != _fields.OPTIONAL[k]}
        for role in custom.PREFIXES:
            if values.get(role) is not None:
                values[role] = {"custom": values[role].name}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, networks: VAE | None = None) -> VAE:
        """A spec from :meth:`to_dict`'s data (e.g. a checkpoint's); unknown keys are an error.

        Args:
            networks: for a custom model's data, the spec that holds its networks
                (e.g. the one it was saved from); the data must otherwise agree with it.
        """
        if not isinstance(data, dict):
            raise TypeError(f"a model spec must be a dict of its fields; got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model spec keys {unknown}; expected some of {sorted(known)}")
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        saved = {role: fields.pop(role) for role in custom.PREFIXES if fields.get(role) is not None}
        if not saved:
            return cls(**fields)
        return _fields.with_networks(cls, fields, saved, networks)

    # ------------------------------------------------------------ the network

    def encode(self, params: Params, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """q(z|x[, y]) = N(mu, diag exp(logvar)): x (b, *input_shape) or (b, d) -> mu, logvar (b, z)."""
        return network.encode(self, params, self._input("x", x, params, labels), labels)

    def decode(self, params: Params, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """The decoder's output (logits, or the Gaussian mean): (..., z) -> (..., d) or (..., c, h, w)."""
        return network.decode(self, params, self._input("z", z, params, labels), labels)

    @staticmethod
    def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
        """z = mu + exp(logvar / 2) * eps; eps ~ N(0, I) is drawn by the caller."""
        _values.float_tensors(mu=mu, logvar=logvar, eps=eps)
        _values.broadcast("mu", mu.shape, "logvar", logvar.shape)
        _values.broadcast("eps", eps.shape, "mu", torch.broadcast_shapes(mu.shape, logvar.shape))
        return mu + torch.exp(0.5 * logvar) * eps

    def code(self, params: Params, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """The posterior's central point z at eps = 0 (the mean, moved by any IAF steps): (b, z)."""
        return latents.code(self, params, self._input("x", x, params, labels), labels)

    def classify(self, params: Params, x: Tensor) -> Tensor:
        """A semi-supervised model's q(y|x) as log-probabilities: x (b, *input_shape) -> (b, n_classes)."""
        return torch.log_softmax(network.classify(self, params, self._input("x", x, params)), dim=-1)

    def mean(self, params: Params, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """E[x|z(, y)] in data space: (b, z) -> (b, *input_shape).

        The sigmoid of the logits (Bernoulli), the continuous Bernoulli's mean,
        or the Gaussian mean.
        """
        out = likelihoods.decoder_mean(self, network.decode(self, params, z, labels))
        return out.reshape(*z.shape[:-1], *self.input_shape)

    # ------------------------------------------------------------ densities and bounds

    def log_px(self, params: Params, out: Tensor, x: Tensor) -> Tensor:
        """log p(x|z) from the decoder's output: (..., d) -> (...,)."""
        return likelihoods.log_px(self, params, out, x)

    def prior_log_prob(self, params: Params, z: Tensor) -> Tensor:
        """log p(z) under the model's prior: (..., z) -> (...,)."""
        return priors.log_prior(self, params, z)

    def elbo_terms(self, params: Params, x: Tensor, eps: Tensor, labels: Tensor | None = None, *,
                   kl: str = "auto", per_dim: bool = False) -> tuple[Tensor, Tensor]:  # fmt: skip
        """The single-sample ELBO's terms per example: rec (b,) and kl (b,) (or (b, z) with ``per_dim``)."""
        x, eps, labels = self._bound_inputs(params, x, eps, labels)
        losses.check_kl(self, kl)
        if per_dim and not self.closed_form_kl:
            raise ValueError(f"per_dim needs a closed-form KL per dimension: the standard normal prior and one Gaussian "
                             f"stochastic layer; this model has prior={self.prior!r}, posterior={self.posterior!r}, "
                             f"top_latent_dim={self.top_latent_dim}")  # fmt: skip
        if eps.ndim != 2 or eps.shape[1] != self.noise_dim or (x.ndim >= 1 and eps.shape[0] != x.shape[0]):
            raise ValueError(f"eps must have shape (b, z) = ({x.shape[0] if x.ndim else '?'}, {self.noise_dim}) "
                             f"for x of shape {tuple(x.shape)}; got {tuple(eps.shape)}")  # fmt: skip
        return losses.single_sample_terms(self, params, x, eps, labels, kl=kl, per_dim=per_dim)

    def elbo(self, params: Params, x: Tensor, eps: Tensor, labels: Tensor | None = None, *,
             beta: float | Tensor = 1.0, kl: str = "auto") -> Tensor:  # fmt: skip
        """log p(x|z) - beta * KL(q(z|x) || p(z)) per example, in nats, eps (b, z): (b,).

        With beta = 1 an unbiased estimate of the evidence lower bound E_q[log p(x|z)] - KL <= log p(x);
        beta != 1 gives the beta-VAE objective. The KL is in closed form for one Gaussian layer under
        the standard normal prior, else the single-sample Monte Carlo term log q(z|x) - log p(z)
        (``kl``: ``"auto"``, ``"closed"`` or ``"mc"``). ``labels``: a conditional model's, int (b,) or
        one-hot (b, n).
        """
        losses.check_kl(self, kl)
        _values.weight("beta", beta)  # a tensor's values read where they can be (not under compile or vmap)
        beta = beta if isinstance(beta, Tensor) else float(beta)  # torch takes no int beyond int64
        rec, kl_term = self.elbo_terms(params, x, eps, labels, kl=kl)
        if isinstance(beta, Tensor):
            _values.broadcast("beta", beta.shape, "the ELBO per example", rec.shape, onto=True)
        return rec - beta * kl_term

    def log_weights(self, params: Params, x: Tensor, eps: Tensor, labels: Tensor | None = None) -> Tensor:
        """log w = log p(x|z) + log p(z) - log q(z|x) at z = mu + sigma * eps, eps (k, b, z): (k, b)."""
        x, eps, labels = self._bound_inputs(params, x, eps, labels)
        estimators.check_eps(self, x, eps)
        rec, kl = estimators.importance_terms(self, params, x, eps, labels)
        return rec - kl

    def iwae(self, params: Params, x: Tensor, eps: Tensor, labels: Tensor | None = None) -> Tensor:
        """The importance-weighted bound log (1/k) sum_i w_i per example, in nats, eps (k, b, z): (b,).

        A lower bound on log p(x) (log p(x|y)) in expectation that tightens as k grows (Burda et al.
        2015); with k = 1 it equals ``elbo(params, x, eps[0], labels, kl="mc")``.
        """
        x, eps, labels = self._bound_inputs(params, x, eps, labels)
        return estimators.importance_bound(self, params, x, eps, labels)

    def log_likelihood(self, params: Params, x: Tensor, labels=None, *, k: int = 5000, seed: int = 0,
                       chunk: int | None = None, batch_size: int = 100, progress: bool | str = True,
                       compile: bool | str = "auto", autocast: str | None = "auto",
                       threads: int | None = None) -> Tensor:  # fmt: skip
        """The importance-sampled log p(x) (log p(x|y)) per example, in bounded memory: (n,).
        See :func:`vaefunc.log_likelihood` (``progress``: a bar when stderr is a terminal; ``compile``
        and ``autocast``: compiled chunks, and their matmuls in bf16; ``threads``: its intra-op threads,
        None: one or all, whichever runs a chunk faster)."""
        return estimators.estimate_log_likelihood(self, params, x, labels, k=k, seed=seed, chunk=chunk,
                                                  batch_size=batch_size, progress=progress, compile=compile,
                                                  autocast=autocast, threads=threads)  # fmt: skip

    def sample(self, params: Params, n: int, *, seed: int = 0, labels=None) -> Tensor:
        """n decoder means of draws from the prior: (n, *input_shape). See :func:`vaefunc.sample`."""
        _check.params_dict(params)
        _check.param_shapes(_fields.shapes_of(self), params, need=_DECODES)
        return latents.sample_means(self, params, n, seed=seed, labels=labels)

    def loss(self, objective: str = "elbo", kl_schedule=None, *, alpha: float = 0.0, gradient: str = "reparam"):
        """The training loss ``loss_fn(params, x, eps, beta, capacity, y=None) -> (loss, metrics)``.
        See :func:`vaefunc.losses.training_loss` (and, for a semi-supervised model,
        :func:`vaefunc.losses.semi_supervised_loss`, whose classification weight is ``alpha``).
        ``gradient``: its gradient estimator, ``"reparam"``, ``"stl"`` (ELBO) or ``"dreg"`` (IWAE)
        (:mod:`vaefunc.gradients`)."""
        alpha = _check.number("alpha", alpha, minimum=0.0)
        if alpha and not self.semi_supervised:
            raise ValueError(f"alpha weighs a semi-supervised model's classification loss; this model is not one "
                             f"(got alpha={alpha!r})")  # fmt: skip
        return losses.training_loss(self, objective=objective, kl_schedule=kl_schedule, alpha=alpha,
                                    gradient=gradient)  # fmt: skip


_READS = {"x": lambda k: k.startswith("encoder."), "z": lambda k: k.startswith("decoder.")}
"""The params a method given x (the encoder) or z (the decoder) reads at least."""


def _ALL(key: str) -> bool:
    """The params a bound reads: every part but a semi-supervised classifier."""
    return not key.startswith("classifier.")


def _DECODES(key: str) -> bool:
    """The params sampling from the prior reads: all but the encoder, the classifier and the likelihood."""
    return not key.startswith(("encoder.", "classifier.", "likelihood."))
