"""The spec a call runs: from ``model=``, or read from a param dict's shapes plus the static choices
given as keywords (the params-first functions, ``train`` without ``model=``, old checkpoints),
cached so a loop of calls on one model's params builds one spec.
"""

from __future__ import annotations

from typing import Any

import torch

from ._types import Params
from .spec import VAE


def spec_of(params: Params, **choices: Any) -> VAE:
    """``VAE.from_params(params, **choices)``, cached by the params' keys and shapes and the choices
    (a loop of calls on one model's params builds one spec). A choice given as None is an error, as
    in the spec (leave it out for the default)."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict of tensors (from VAE.init); got {type(params).__name__}")
    try:
        shapes = tuple((k, tuple(v.shape)) for k, v in params.items() if k.startswith(_READ))
    except AttributeError:
        raise TypeError("params must map str keys to tensors") from None
    key = (shapes, tuple(sorted(choices.items())))
    if torch.compiler.is_compiling():  # traced: built from the shapes, once per compile; reading the cache
        return _build(params, choices)  # would guard the graph on its contents, which eager calls change
    try:
        return _SPECS[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable choice: build it uncached
        return _build(params, choices)
    if len(_SPECS) >= 256:
        _SPECS.pop(next(iter(_SPECS)))
    _SPECS[key] = spec = _build(params, choices)
    return spec


def _build(params: Params, choices: dict[str, Any]) -> VAE:
    try:
        return VAE.from_params(params, **choices)
    except (TypeError, ValueError) as e:
        if str(e).startswith("params"):
            raise
        raise type(e)(f"params do not describe a vaefunc model: {e}") from None


_READ = ("encoder.", "decoder.", "prior.", "likelihood.", "classifier.")
_SPECS: dict[tuple, VAE] = {}
DEFAULTS = {"activation": "relu", "likelihood": "bernoulli", "obs_std": 1.0}
"""The static choices' defaults where a function takes them as keywords beside ``model=``."""


def resolve(params: Params, model: VAE | None = None, **choices: Any) -> VAE:
    """The spec a function that takes ``model=`` or the static choices as keywords runs: ``model`` if
    given (the keyword choices must then be left at their defaults or agree with it), else
    :func:`spec_of` the params and the choices."""
    if model is None:
        return spec_of(params, **choices)
    if not hasattr(model, "layout") or not hasattr(model, "to_dict"):
        raise TypeError(f"model must be a vaefunc.VAE spec; got {type(model).__name__}")
    for name, value in choices.items():
        if value != DEFAULTS.get(name) and getattr(model, name) != value:
            raise ValueError(f"{name}={value!r} differs from the model's {getattr(model, name)!r}; "
                             f"with model= the spec holds the {name}")  # fmt: skip
    return model
