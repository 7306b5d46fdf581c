"""The fields of a :class:`vaefunc.VAE` spec: checked and put in canonical form when a spec is made,
and read back from a param dict's keys and shapes (:meth:`vaefunc.VAE.from_params`).

The spec's methods live in :mod:`vaefunc.spec`; this module knows the spec only as a value with
its fields, so it sits below it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from . import _check, custom, likelihoods, priors
from ._types import Params
from .layout import architecture, conv_channels
from .nn import ACTIVATIONS

if TYPE_CHECKING:
    from .spec import VAE

ARCHS = ("mlp", "conv", "custom")
POSTERIORS = ("gaussian", "iaf")
LIKELIHOODS = likelihoods.LIKELIHOODS
LEARN_OBS_STD = (None, "global", "pixel")
PRIORS = priors.PRIORS
CONV_CHANNELS = (32, 32, 64, 64)
"""Default channel widths of the conv encoder, one per stride-2 layer (the decoder mirrors them)."""
CONV_MAX_LAYERS, CONV_MIN_SIZE = 4, 4
"""By default the conv encoder halves the image while it is even and at least 2 * CONV_MIN_SIZE wide."""



_SHAPES: dict[VAE, dict[str, tuple[int, ...]]] = {}


def shapes_of(model: VAE) -> dict[str, tuple[int, ...]]:
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


def check_output_fields(activation: Any, likelihood: Any, obs_std: Any, learn_obs_std: Any) -> float:
    """The activation and likelihood fields a spec and a ``TrainConfig`` share, checked; obs_std as a float."""
    _check.choice("activation", activation, ACTIVATIONS)
    _check.choice("likelihood", likelihood, LIKELIHOODS)
    obs = _check.number("obs_std", obs_std, minimum=0.0, strict=True)
    _check.choice("learn_obs_std", learn_obs_std, LEARN_OBS_STD)
    if learn_obs_std is not None and likelihood != "gaussian":
        raise ValueError(f"learn_obs_std needs likelihood='gaussian'; got likelihood={likelihood!r}")
    return obs


def normalized(model: VAE) -> dict[str, Any]:
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


OPTIONAL = {"posterior": "gaussian", "flow_steps": 0, "flow_hidden": (), "top_latent_dim": 0, "top_hidden": (),
             "encoder": None, "decoder": None, "classifier": None}  # fmt: skip
"""Fields :meth:`vaefunc.VAE.to_dict` leaves out at these values (the data of older specs stays as it was)."""


def with_networks(cls: type[VAE], fields: dict[str, Any], saved: dict[str, Any], networks: VAE | None) -> VAE:
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


def read_fields(params: Params, choices: dict[str, Any]) -> dict[str, Any]:
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
