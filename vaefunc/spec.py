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

from . import _check, custom, estimators, latents, likelihoods, losses, network, priors
from ._types import Params
from .layout import architecture, conv_channels
from .nn import ACTIVATIONS

ARCHS = ("mlp", "conv", "custom")
POSTERIORS = ("gaussian", "iaf")
LIKELIHOODS = likelihoods.LIKELIHOODS
LEARN_OBS_STD = (None, "global", "pixel")
PRIORS = priors.PRIORS
CONV_CHANNELS = (32, 32, 64, 64)
"""Default channel widths of the conv encoder, one per stride-2 layer (the decoder mirrors them)."""
CONV_MAX_LAYERS, CONV_MIN_SIZE = 4, 4
"""By default the conv encoder halves the image while it is even and at least 2 * CONV_MIN_SIZE wide."""


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
        for name, value in _normalized(self).items():
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
        nets = {role: custom.as_network(role, net) for role, net in
                (("encoder", encoder), ("decoder", decoder), ("classifier", classifier)) if net is not None}  # fmt: skip
        taken = sorted(set(fields) & {"arch", "hidden", "channels", "kernel"})
        if taken:
            raise TypeError(f"a custom model's networks are its own; {taken} are for the built-in ones")
        model = cls(input_shape, latent_dim=latent_dim, arch="custom", hidden=(), **fields, **nets)
        network.probe(model)
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
            _check.param_shapes(_shapes_of(self), params, need or _READS[name])
        if labels is not None and self.n_classes:
            _check.label_range(labels, self.n_classes)
        value = _input(name, value, params)
        shape = tuple(value.shape)
        if name == "z" and (not shape or shape[-1] != self.latent_dim):
            raise ValueError(f"z must have shape (..., {self.latent_dim}) (latent_dim={self.latent_dim}); got {shape}")
        if name == "x" and not shape:
            raise ValueError(f"x must have shape (..., {', '.join(map(str, self.input_shape))}) for this model; got ()")
        if name == "x":  # the network's own reading of the layout (a view: no copy, no host sync), named
            try:
                network.to_image(value, self.input_shape) if self.arch == "conv" else network.flatten(value, self.data_dim)
            except ValueError as e:
                raise ValueError(f"x: {e}") from None
        return value

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
        return cls(**_read_fields(params, choices))

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready data (tuples as lists); :meth:`from_dict` reads it back.

        The fields of deeper models and custom networks are written only when
        set (an older spec's data is unchanged); a custom network is written
        as its name, ``{"custom": "ResidualEncoder"}``: its code is never
        saved, and :meth:`from_dict` takes it back from the caller.
        """
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        values = {k: v for k, v in values.items() if k not in _OPTIONAL or v != _OPTIONAL[k]}
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
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        saved = {role: fields.pop(role) for role in custom.PREFIXES if fields.get(role) is not None}
        if not saved:
            return cls(**fields)
        return _with_networks(cls, fields, saved, networks)

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
        _check.float_tensors(mu=mu, logvar=logvar, eps=eps)
        _check.broadcast("mu", mu.shape, "logvar", logvar.shape)
        _check.broadcast("eps", eps.shape, "mu", torch.broadcast_shapes(mu.shape, logvar.shape))
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
        x, eps = self._input("x", x, params, labels, _ALL), _input("eps", eps, params)
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
        """log p(x|z) - beta * KL(q(z|x) || p(z)) per example, eps (b, z): (b,). See :func:`vaefunc.elbo`."""
        _check.weight("beta", beta)  # a tensor's values read where they can be (not under compile or vmap)
        beta = beta if isinstance(beta, Tensor) else float(beta)  # torch takes no int beyond int64
        rec, kl_term = self.elbo_terms(params, x, eps, labels, kl=kl)
        if isinstance(beta, Tensor):
            _check.broadcast("beta", beta.shape, "the ELBO per example", rec.shape, onto=True)
        return rec - beta * kl_term

    def log_weights(self, params: Params, x: Tensor, eps: Tensor, labels: Tensor | None = None) -> Tensor:
        """log w = log p(x|z) + log p(z) - log q(z|x) at z = mu + sigma * eps, eps (k, b, z): (k, b)."""
        x, eps = self._input("x", x, params, labels, _ALL), _input("eps", eps, params)
        estimators.check_eps(self, x, eps)
        rec, kl = estimators.importance_terms(self, params, x, eps, labels)
        return rec - kl

    def iwae(self, params: Params, x: Tensor, eps: Tensor, labels: Tensor | None = None) -> Tensor:
        """The importance-weighted bound log (1/k) sum_i w_i per example, eps (k, b, z): (b,)."""
        x, eps = self._input("x", x, params, labels, _ALL), _input("eps", eps, params)
        estimators.check_y(self, x, labels)
        return estimators.importance_bound(self, params, x, eps, labels)

    def log_likelihood(self, params: Params, x: Tensor, labels=None, *, k: int = 5000, seed: int = 0,
                       chunk: int | None = None, batch_size: int = 100, progress: bool | str = True,
                       compile: bool | str = "auto", autocast: str | None = "auto") -> Tensor:  # fmt: skip
        """The importance-sampled log p(x) (log p(x|y)) per example, in bounded memory: (n,).
        See :func:`vaefunc.log_likelihood` (``progress``: a bar when stderr is a terminal; ``compile``
        and ``autocast``: compiled chunks, and their matmuls in bf16)."""
        return estimators.estimate_log_likelihood(self, params, x, labels, k=k, seed=seed, chunk=chunk,
                                                  batch_size=batch_size, progress=progress, compile=compile,
                                                  autocast=autocast)  # fmt: skip

    def sample(self, params: Params, n: int, *, seed: int = 0, labels=None) -> Tensor:
        """n decoder means of draws from the prior: (n, *input_shape). See :func:`vaefunc.sample`."""
        _check.params_dict(params)
        _check.param_shapes(_shapes_of(self), params, need=lambda k: not k.startswith(("encoder.", "classifier.", "likelihood.")))
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


_SHAPES: dict[VAE, dict[str, tuple[int, ...]]] = {}


def _shapes_of(model: VAE) -> dict[str, tuple[int, ...]]:
    """``model.param_shapes()``, computed once per spec (a plain dict: torch.compile traces through it)."""
    try:
        shapes = _SHAPES.get(model)
    except TypeError:  # a spec with an unhashable custom network
        return model.param_shapes()
    if shapes is None:
        if len(_SHAPES) > 256:
            _SHAPES.clear()
        shapes = _SHAPES[model] = model.param_shapes()
    return shapes


_READS = {"x": lambda k: k.startswith("encoder."), "z": lambda k: k.startswith("decoder.")}
"""The params a method given x (the encoder) or z (the decoder) reads at least."""
_ALL = lambda k: not k.startswith("classifier.")  # noqa: E731  (a bound: every part but a semi-supervised classifier)


def _input(name: str, value: Tensor, params: Params) -> Tensor:
    """An input of a method: a floating-point tensor of the params' dtype (checked without a host sync,
    so the methods stay usable under torch.compile and vmap; the params-first functions also check values)."""
    if not isinstance(params, dict) or not params:
        raise TypeError(f"params must be a non-empty dict of tensors; got {type(params).__name__}")
    return _check.tensor_input(name, value, next(iter(params.values())).dtype)


def check_output_fields(activation: Any, likelihood: Any, obs_std: Any, learn_obs_std: Any) -> float:
    """The activation and likelihood fields a spec and a ``TrainConfig`` share, checked; obs_std as a float."""
    _check.choice("activation", activation, ACTIVATIONS)
    _check.choice("likelihood", likelihood, LIKELIHOODS)
    obs = _check.number("obs_std", obs_std, minimum=0.0, strict=True)
    _check.choice("learn_obs_std", learn_obs_std, LEARN_OBS_STD)
    if learn_obs_std is not None and likelihood != "gaussian":
        raise ValueError(f"learn_obs_std needs likelihood='gaussian'; got likelihood={likelihood!r}")
    return obs


def _normalized(model: VAE) -> dict[str, Any]:
    """The fields checked and in canonical form (tuples, resolved conv channels, 0 components for N(0, I))."""
    shape = (model.input_shape,) if isinstance(model.input_shape, int) else model.input_shape
    out: dict[str, Any] = {"input_shape": _check.int_tuple("input_shape", shape, allow_empty=False, example="(784,)")}
    out["latent_dim"] = _check.positive_int("latent_dim", model.latent_dim, maximum=_check.MAX_WIDTH)
    out["hidden"] = _check.int_tuple("hidden", model.hidden, example="(400,)")
    if max(out["input_shape"] + out["hidden"]) > _check.MAX_WIDTH:
        raise ValueError(f"input_shape and hidden must be at most {_check.MAX_WIDTH} wide; got {out['input_shape']} "
                         f"and {out['hidden']}")  # fmt: skip
    _check.choice("arch", model.arch, ARCHS)
    out["n_classes"] = _check.integer("n_classes", 0 if model.n_classes is None else model.n_classes, minimum=0,
                                      maximum=_check.MAX_WIDTH)  # fmt: skip
    out["obs_std"] = check_output_fields(model.activation, model.likelihood, model.obs_std, model.learn_obs_std)
    _check.choice("prior", model.prior, PRIORS)
    components = (_check.positive_int("prior_components", model.prior_components, maximum=_check.MAX_WIDTH)
                  if model.prior != "normal" else 0)  # fmt: skip
    out["prior_components"] = components
    out["kernel"] = _check.integer("kernel", model.kernel, minimum=2)
    if not isinstance(model.semi_supervised, bool):
        raise TypeError(f"semi_supervised must be True or False; got {model.semi_supervised!r}")
    if model.semi_supervised and out["n_classes"] < 2:
        raise ValueError(f"semi_supervised needs n_classes >= 2 (the classes to infer); got {out['n_classes']}")
    if model.prior == "vamp" and out["n_classes"]:
        raise ValueError(f"prior='vamp' needs an unconditional model (n_classes=0): its pseudo-inputs pass through "
                         f"the encoder, which here also reads a label; got n_classes={out['n_classes']} "
                         "(use prior='mog' or 'normal')")  # fmt: skip
    out |= _latent_fields(model, out)
    if model.arch == "custom":
        out |= _custom_fields(model, out)
    elif any(getattr(model, role) is not None for role in custom.PREFIXES):
        raise ValueError(f"encoder, decoder and classifier networks need arch='custom' (VAE.custom(...)); "
                         f"got arch={model.arch!r}")  # fmt: skip
    if model.arch == "conv":
        out["channels"] = _conv_channels(out["input_shape"], model.channels, out["kernel"])
    elif model.channels is not None or out["kernel"] != 4:
        raise ValueError(f"channels and kernel are for arch='conv' only; got channels={model.channels!r}, "
                         f"kernel={model.kernel!r} with arch={model.arch!r}")  # fmt: skip
    return out


def _latent_fields(model: VAE, out: dict[str, Any]) -> dict[str, Any]:
    """The posterior family and the second stochastic layer, checked and with their defaults."""
    _check.choice("posterior", model.posterior, POSTERIORS)
    z = out["latent_dim"]
    fields: dict[str, Any] = {"top_latent_dim": _check.integer("top_latent_dim", model.top_latent_dim, minimum=0,
                                                                maximum=_check.MAX_WIDTH)}  # fmt: skip
    if model.posterior == "iaf":
        steps = 2 if model.flow_steps is None else model.flow_steps
        fields["flow_steps"] = _check.positive_int("flow_steps", steps, maximum=64)
        hidden = (2 * z,) if model.flow_hidden is None else model.flow_hidden
        fields["flow_hidden"] = _check.int_tuple("flow_hidden", hidden, example=f"({2 * z},)")
    elif model.flow_steps or model.flow_hidden:
        raise ValueError(f"flow_steps and flow_hidden are for posterior='iaf'; got flow_steps={model.flow_steps!r}, "
                         f"flow_hidden={model.flow_hidden!r} with posterior={model.posterior!r}")  # fmt: skip
    else:
        fields |= {"flow_steps": 0, "flow_hidden": ()}
    if fields["top_latent_dim"]:
        top = fields["top_latent_dim"]
        hidden = (top, top) if model.top_hidden is None else model.top_hidden
        fields["top_hidden"] = _check.int_tuple("top_hidden", hidden, example=f"({top}, {top})")
    elif model.top_hidden:
        raise ValueError(f"top_hidden is for a second stochastic layer (top_latent_dim > 0); got {model.top_hidden!r}")
    else:
        fields["top_hidden"] = ()
    if model.prior == "vamp" and (model.posterior != "gaussian" or fields["top_latent_dim"]):
        raise ValueError("the VampPrior mixes the encoder's Gaussian posteriors, so it needs one Gaussian stochastic "
                         f"layer; got posterior={model.posterior!r}, top_latent_dim={fields['top_latent_dim']}")
    return fields


def _custom_fields(model: VAE, out: dict[str, Any]) -> dict[str, Any]:
    """A custom model's networks present, the built-in networks' fields unused."""
    for role in ("encoder", "decoder"):
        if getattr(model, role) is None:
            raise ValueError(f"arch='custom' needs an {role} network (build it with VAE.custom(encoder=..., "
                             "decoder=...))")  # fmt: skip
    if model.semi_supervised and model.classifier is None:
        raise ValueError("a semi-supervised custom model needs a classifier network (VAE.custom(..., classifier=...)) "
                         "mapping x (b, *input_shape) to logits (b, n_classes)")  # fmt: skip
    if model.classifier is not None and not model.semi_supervised:
        raise ValueError("a classifier network is for a semi-supervised model (semi_supervised=True)")
    if out["hidden"]:
        raise ValueError(f"a custom model's networks are its own; got hidden={out['hidden']}")
    for role in custom.PREFIXES:
        if getattr(model, role) is not None and not isinstance(getattr(model, role), custom.Network):
            raise TypeError(f"{role} must be a vaefunc.custom.Network (build the spec with VAE.custom); "
                            f"got {type(getattr(model, role)).__name__}")  # fmt: skip
    return {}


_OPTIONAL = {"posterior": "gaussian", "flow_steps": 0, "flow_hidden": (), "top_latent_dim": 0, "top_hidden": (),
             "encoder": None, "decoder": None, "classifier": None}  # fmt: skip
"""Fields :meth:`VAE.to_dict` leaves out at these values (the data of older specs stays as it was)."""


def _with_networks(cls: type, fields: dict[str, Any], saved: dict[str, Any], networks: Any) -> VAE:
    """A custom model's spec from its saved fields and the caller's spec that holds the networks."""
    names = {role: (v.get("custom") if isinstance(v, dict) else v) for role, v in saved.items()}
    if networks is None:
        raise ValueError(f"this model has custom networks {names}, whose code a file never holds; pass the spec "
                         "that has them: vaefunc.load(path, model=VAE.custom(encoder=..., decoder=..., ...))")  # fmt: skip
    if not isinstance(networks, cls):
        raise TypeError(f"model must be a vaefunc.VAE spec; got {type(networks).__name__}")
    model = cls(**fields, **{role: getattr(networks, role) for role in saved})
    if model.to_dict() != networks.to_dict():
        mine, theirs = model.to_dict(), networks.to_dict()
        diff = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        raise ValueError(f"the saved spec differs from the given model in {diff}: saved "
                         f"{ {k: mine.get(k) for k in diff} }, given { {k: theirs.get(k) for k in diff} }")  # fmt: skip
    return networks


def _conv_channels(shape: tuple[int, ...], channels, kernel: int) -> tuple[int, ...]:
    """Check a conv input shape and pick the channel widths."""
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(f"arch='conv' needs a square image input_shape (c, h, w) with h == w; got {shape}")
    if kernel % 2:
        raise ValueError(f"kernel must be even (padding kernel/2 - 1 halves the size); got {kernel}")
    size = shape[1]
    if channels is None:
        depth, s = 0, size
        while depth < CONV_MAX_LAYERS and s % 2 == 0 and s // 2 >= CONV_MIN_SIZE:
            depth, s = depth + 1, s // 2
        if depth == 0:
            raise ValueError(f"arch='conv' needs an even image size of at least {2 * CONV_MIN_SIZE}; got {shape}")
        return CONV_CHANNELS[:depth]
    channels = _check.int_tuple("channels", channels, allow_empty=False, example="(32, 64)")
    if size % 2 ** len(channels):
        raise ValueError(
            f"{len(channels)} stride-2 convolutions need an image size divisible by {2 ** len(channels)}; got {shape}"
        )
    return channels


_STATIC = ("activation", "likelihood", "obs_std", "input_shape")


def _read_fields(params: Params, choices: dict[str, Any]) -> dict[str, Any]:
    """VAE fields from a param dict's keys and shapes, plus the static ``choices``."""
    unknown = sorted(set(choices) - set(_STATIC))
    if unknown:
        raise TypeError(f"from_params takes the choices a param dict cannot record, {list(_STATIC)}; got {unknown}")
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict of tensors (from VAE.init); got {type(params).__name__}")
    a = architecture(params)
    hidden = tuple(layer["weight"].shape[0] for layer in a.enc_dense[:-1]) if a.enc_dense else tuple(
        layer["weight"].shape[0] for layer in a.dec_dense[:-1])[::-1]  # fmt: skip
    fields: dict[str, Any] = {"latent_dim": a.latent_dim, "hidden": hidden, "arch": a.arch, "n_classes": a.n_classes}
    if a.arch == "conv":
        conv = a.enc_conv or a.dec_conv
        fields |= {"channels": conv_channels(a) or tuple(w["weight"].shape[0] for w in a.dec_conv[::-1]),
                   "kernel": conv[0]["weight"].shape[-1]}  # fmt: skip
    fields |= priors.read_fields(params) | likelihoods.read_fields(params, choices.get("likelihood"))
    if any(k.startswith("classifier.") for k in params):
        fields["semi_supervised"] = True
    fields |= {k: v for k, v in choices.items() if k in ("activation", "likelihood", "obs_std")}
    fields["input_shape"] = _input_shape(a.input_shape, choices.get("input_shape"), a.arch)
    return fields


def _input_shape(found: tuple[int, ...], given, arch: str) -> tuple[int, ...]:
    """The params' input shape, or a given one with as many features (an MLP cannot record an image shape)."""
    if given is None:
        return found
    given = (given,) if isinstance(given, int) else tuple(given)
    if (arch == "conv" and given != found) or math.prod(given) != math.prod(found):
        raise ValueError(f"input_shape {given} does not fit params that read {found} ({math.prod(found)} features)")
    return given
