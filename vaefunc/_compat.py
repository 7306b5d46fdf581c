"""The bridge from the params-first functions of vaefunc 0.1 to the :class:`vaefunc.VAE` spec.

``vaefunc.encode(params, x, activation="tanh")`` and its siblings take a
model's static choices as keywords; each builds the spec those keywords and
the params' shapes describe, once per call, and runs the spec's method.
Building a spec reads the params' keys and shapes, so specs are cached by
(keys, shapes, choices): a loop of old-style calls builds one.
"""

from __future__ import annotations

from typing import Any

import torch

from ._types import Params

_READ = ("encoder.", "decoder.", "prior.", "likelihood.", "classifier.")


def spec_of(params: Params, **choices: Any):
    """``VAE.from_params(params, **choices)``, cached by the params' keys and shapes.

    A choice given as None is an error, as in the spec (leave it out for the default).
    """
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict of tensors (from vaefunc.init); got {type(params).__name__}")
    try:
        shapes = tuple((k, tuple(v.shape)) for k, v in params.items() if k.startswith(_READ))
    except AttributeError:
        raise TypeError("params must map str keys to tensors") from None
    key = (shapes, tuple(sorted(choices.items())))
    if torch.compiler.is_compiling():  # traced: built from the shapes, once per compile; reading the cache
        return _build(params, dict(key[1]))  # would guard the graph on its contents, which eager calls change
    try:
        return _CACHE[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable choice: build it uncached
        return _build(params, dict(key[1]))
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = spec = _build(params, dict(key[1]))
    return spec


_CACHE: dict[tuple, Any] = {}
_CACHE_SIZE = 256


def _build(params: Params, choices: dict[str, Any]):
    # The spec imports the modules whose params-first functions call this, so it is imported here.
    from .spec import VAE  # noqa: PLC0415

    try:
        return VAE.from_params(params, **choices)
    except (TypeError, ValueError) as e:
        if str(e).startswith("params"):
            raise
        raise type(e)(f"params do not describe a vaefunc model: {e}") from None


def renamed(new_value: Any, old_value: Any, *, new: str, old: str) -> Any:
    """The value of an argument given under its new name or its old (soft-deprecated) one, not both."""
    if old_value is not None and new_value is not None:
        raise TypeError(f"give {new}= (the current name), not both {new}= and {old}=")
    return old_value if new_value is None else new_value



DEFAULTS = {"activation": "relu", "likelihood": "bernoulli", "obs_std": 1.0}
"""The static choices' defaults in the params-first functions."""


def resolve(params: Params, model: Any = None, **choices: Any):
    """The spec a public function runs: ``model`` if given (the keyword choices must then be left at
    their defaults or agree with it), else the one the params and the choices describe."""
    if model is None:
        return spec_of(params, **choices)
    given = {k: v for k, v in choices.items() if v != DEFAULTS.get(k)}
    if not hasattr(model, "layout") or not hasattr(model, "to_dict"):
        raise TypeError(f"model must be a vaefunc.VAE spec; got {type(model).__name__}")
    for name, value in given.items():
        if getattr(model, name) != value:
            raise ValueError(f"{name}={value!r} differs from the model's {getattr(model, name)!r}; "
                             f"with model= the spec holds the {name}")  # fmt: skip
    return model
