"""Checkpoints as safetensors (never pickle), written atomically.

A checkpoint holds the params, optionally the optimizer state, a JSON config
and a :class:`vaefunc.TrainState`'s position (epoch, step, generator states,
running metric sums, batch size). Every tensor is stored under a dotted key::

    params.encoder.0.weight            opt_state.0.mu.encoder.0.weight
    opt_state.0.count                  state.rng.noise   (uint8 generator state)
    opt_state.1.lr                     state.sums

and the tree that puts them back together (dicts, tuples, NamedTuples such
as ``AdamState``, ints) is JSON in the safetensors metadata, next to the
config. Loading checks the file's length against its header (truncation),
the params' structure, the optimizer state's shapes against the params, and
the params' shapes against the config's ``input_shape`` / ``latent_dim`` /
``hidden``, and its ``activation`` against the known names. A safetensors
file without vaefunc metadata (a plain state dict) loads as params alone.

The params do not record the hidden activation (see :mod:`vaefunc.model`);
the config does, when it has one: ``config["activation"]`` (a
:class:`vaefunc.TrainConfig` field, and a setting of every command-line run).
A config without it is of a ReLU model, the only kind older vaefunc trained.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from . import _check
from ._io import atomic_write_bytes
from ._types import OptState, Params
from .layout import data_dim, latent_dim
from .nn import ACTIVATIONS
from .optim import AdamState, EmptyState, ScaleByLearningRateState
from .rng import STREAMS
from ._resolve import spec_of
from .spec import VAE
from .state import TrainState, check_params

FORMAT = "vaefunc.checkpoint"
VERSION = 1


class Checkpoint(NamedTuple):
    """What :func:`load` returns."""

    params: Params
    opt_state: OptState | None  # None when none was saved
    config: dict[str, Any] | None  # the JSON config, None when none was saved
    state: TrainState | None  # to resume: vaefunc.train(..., resume=state)
    model: VAE | None = None  # the spec: the saved one, or the one the params and config describe


class CheckpointError(ValueError):
    """A checkpoint is truncated, corrupt, or does not match its config."""


def save(
    path: str | os.PathLike,
    params: Params,
    *,
    model: VAE | None = None,
    opt_state: OptState | None = None,
    config: dict[str, Any] | Any | None = None,
    state: TrainState | None = None,
    allow_nonfinite: bool = False,
) -> Path:
    """Write a checkpoint atomically (temporary file in the same folder, fsync, rename).

    Args:
        path: the ``.safetensors`` file to write; its folder is created.
        params: the model's params, a flat dict of tensors (an ensemble's
            stacked params too, with the members' ``model``).
        model: the :class:`vaefunc.VAE` spec, saved beside the params so that
            ``load(path).model`` gives it back; the params must be its.
        opt_state: the optimizer state (a tree of NamedTuples, tuples and dicts
            of tensors); default: ``state.opt_state`` when ``state`` is given.
        config: a JSON-serialisable dict or a dataclass with ``to_dict`` (e.g.
            ``TrainConfig``). Its ``input_shape``, ``latent_dim`` and ``hidden``,
            where present, must match the params.
        state: a :class:`vaefunc.TrainState`; its epoch, step, generator
            states, metric sums and batch size are stored (its params and opt_state are
            the ``params`` and ``opt_state`` saved here).
        allow_nonfinite: write params holding NaN or inf (refused by default,
            as :func:`load` refuses them).

    Returns:
        The path written.

    Example:
        >>> model = vaefunc.VAE((784,), latent_dim=20, activation="tanh")
        >>> vaefunc.save("model.safetensors", model.init(), model=model)
        >>> vaefunc.load("model.safetensors").model.activation
        'tanh'
    """
    _check.option("allow_nonfinite", allow_nonfinite, (True, False))
    members = _check_params(params, model)
    config = _config_data(config)
    config_json = _json("config", config)
    if config is not None:
        _check_config(model or spec_of(params), config, "config")
    if state is not None and not isinstance(state, TrainState):
        raise TypeError(f"state must be a vaefunc.TrainState; got {type(state).__name__}")
    if opt_state is None and state is not None:
        opt_state = state.opt_state
    if state is not None:  # what load would refuse is never written
        _check.train_position("state", state.epoch, state.step, state.rng, state.sums, STREAMS)
        _check_batch_size("state", state.batch_size, ValueError)
    if not allow_nonfinite:
        _check.finite_tree("params", params, " to save (allow_nonfinite=True saves them anyway)")
    tree: dict[str, Any] = {"params": params}
    if opt_state is not None:
        _check.opt_state(params, opt_state, "opt_state", CheckpointError)
        tree["opt_state"] = opt_state
    if state is not None:
        tree["state"] = {"epoch": state.epoch, "step": state.step, "rng": state.rng, "sums": state.sums}
        if state.batch_size is not None:  # a mid-epoch state resumes only at it
            tree["state"]["batch_size"] = state.batch_size
    tensors: dict[str, Tensor] = {}
    spec = {k: _flatten(v, k, tensors) for k, v in tree.items()}
    metadata = {"format": FORMAT, "version": str(VERSION), "tree": json.dumps(spec), "config": config_json}
    if model is not None:
        metadata["model"] = json.dumps(model.to_dict())
    if members is not None:
        metadata["members"] = str(members)
    from safetensors.torch import save as st_save

    return atomic_write_bytes(path, st_save(_unshared(tensors), metadata=metadata))


def _check_params(params: Params, model: VAE | None) -> int | None:
    """Check the params (against the spec, if given); returns m for an ensemble's stacked params, else None."""
    if model is None:
        check_params(params)
        return None
    if not isinstance(model, VAE):
        raise TypeError(f"model must be a vaefunc.VAE spec; got {type(model).__name__}")
    try:
        model.check(params)
        return None
    except ValueError:
        if not isinstance(params, dict) or not all(isinstance(v, Tensor) and v.ndim for v in params.values()):
            raise
        try:
            model.check(params, stacked=True)
        except ValueError:
            model.check(params)  # the error of the plain params, which is the likelier intent
        return next(iter(params.values())).shape[0]


def _member(params: Params) -> Params:
    return {k: v[0] for k, v in params.items()}


def _config_data(config: Any) -> dict[str, Any] | None:
    if hasattr(config, "to_dict") and not isinstance(config, type):
        return config.to_dict()
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"config must be a dict or a dataclass; got {type(config).__name__}")
    return config


def _json(name: str, value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be JSON-serialisable: {e}") from e


def load(path: str | os.PathLike, *, device: str | torch.device = "cpu", model: VAE | None = None,
         allow_nonfinite: bool = False) -> Checkpoint:  # fmt: skip
    """Read a checkpoint written by :func:`save` (or a plain safetensors state dict).

    Args:
        path: a ``.safetensors`` file.
        device: where to put the tensors.
        model: the spec to load into. Needed for a model with custom networks
            (:meth:`vaefunc.VAE.custom`), whose code a file never holds: the
            saved spec's other fields must agree with it, and the params must
            be its. For any other checkpoint it is checked against the saved spec.
        allow_nonfinite: load params holding NaN or inf (to inspect a run that
            diverged); refused by default, since nothing can train or evaluate them.

    Returns:
        :class:`Checkpoint`: ``params``, ``opt_state``, ``config``, ``state``
        and ``model``, exactly what was saved (values, dtypes, tree structure).
        A checkpoint saved without a spec (older vaefunc, a plain state dict)
        gets the spec its params and config describe (the config's
        ``activation``, ``likelihood`` and ``obs_std``; ReLU and Bernoulli
        where it has none).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a safetensors checkpoint, truncated or corrupt, or
            shapes that do not match the spec, the config or each other.

    Example:
        >>> ckpt = vaefunc.load("runs/mnist5k/checkpoint.safetensors")
        >>> result = vaefunc.train(ckpt.params, data, model=ckpt.model, epochs=20, resume=ckpt.state)
    """
    _check.option("allow_nonfinite", allow_nonfinite, (True, False))
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    data = path.read_bytes()
    metadata = _check_length(data, path)
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    try:
        flat = st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors file ({e})") from e
    flat = {k: v.to(device) for k, v in flat.items()}
    params, opt_state, config, state = _tree(flat, metadata, path)
    model = _model(params, metadata, config, path, model)
    if config is not None:
        _check_config(model, config, str(path))
    if opt_state is not None:
        _check.opt_state(params, opt_state, str(path), CheckpointError)
    if not allow_nonfinite:
        try:
            _check.finite_tree("params", params, " (allow_nonfinite=True loads them anyway)")
        except ValueError as e:
            raise CheckpointError(f"{path}: {e}") from None
    return Checkpoint(params, opt_state, config, state, model)


def _tree(flat: dict[str, Tensor], metadata: dict[str, str], path: Path):
    """(params, opt_state, config, state) from the tensors and the metadata's tree."""
    if metadata.get("format") != FORMAT:
        return flat, None, None, None  # a plain state dict
    version = metadata.get("version", "")
    if not (version.isascii() and version.isdigit() and len(version) < 10) or int(version) < 1:
        raise CheckpointError(f"{path}: the format version must be an int >= 1; got {version!r}")
    if int(version) > VERSION:
        raise CheckpointError(f"{path}: written by a newer vaefunc (format version {version})")
    try:
        spec = json.loads(metadata["tree"])
        config = json.loads(metadata.get("config", "null"))
        tree = {k: _unflatten(v, flat) for k, v in spec.items()}
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from e
    except RecursionError:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata (nested too deeply to read)") from None
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({type(e).__name__}: {e})") from e
    params, opt_state = tree["params"], tree.get("opt_state")
    state = None
    if "state" in tree:
        s = tree["state"]
        if not isinstance(s, dict) or not {"epoch", "step", "rng", "sums"} <= set(s):
            raise CheckpointError(f"{path}: the saved state must hold epoch, step, rng and sums")
        _check.train_position(f"{path}: the saved state", s["epoch"], s["step"], s["rng"], s["sums"], STREAMS,
                              CheckpointError)  # fmt: skip
        _check_batch_size(f"{path}: the saved state", s.get("batch_size"), CheckpointError)
        state = TrainState(params, opt_state, s["epoch"], s["step"], s["rng"], s["sums"], s.get("batch_size"))
    return params, opt_state, config, state


def _check_batch_size(where: str, value: Any, error: type) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**62):
        raise error(f"{where}: batch_size must be a positive int or None; got {value!r}")


def _model(params: Params, metadata: dict[str, str], config: Any, path: Path, given: VAE | None = None) -> VAE:
    """The saved spec (checked against the params and the given one), or the given one, or the one the
    params and an old config describe."""
    stacked = "members" in metadata
    if given is not None and not isinstance(given, VAE):
        raise TypeError(f"model must be a vaefunc.VAE spec; got {type(given).__name__}")
    try:
        if "model" in metadata:
            model = VAE.from_dict(json.loads(metadata["model"]), networks=given)
            if given is not None and model != given:
                raise ValueError(f"the saved spec {model} differs from the given model {given}")
        elif given is not None:
            model = given
        else:
            _check.param_dict(_member(params) if stacked else params)
            model = VAE.from_params(_member(params) if stacked else params, **_old_choices(config))
        model.check(params, stacked=stacked)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: the params are malformed or do not match the model: {e}") from e
    return model


def _old_choices(config: Any) -> dict[str, Any]:
    """The static choices a config of older vaefunc holds (a TrainConfig's, or a run's settings)."""
    if not isinstance(config, dict):
        return {}
    section: dict[str, Any] = config["model"] if isinstance(config.get("model"), dict) else config
    choices = {k: section[k] for k in ("activation", "likelihood", "obs_std") if section.get(k) is not None}
    shape = section.get("input_shape")
    if isinstance(shape, list) and shape:
        choices["input_shape"] = tuple(shape)
    return choices


def model_config(params: Params) -> dict[str, Any]:
    """The architecture the params imply: ``{"data_dim", "latent_dim", "hidden"}``."""
    hidden, i = [], 0
    while f"encoder.{i + 2}.weight" in params:
        hidden.append(params[f"encoder.{i}.weight"].shape[0])
        i += 2
    return {"data_dim": data_dim(params), "latent_dim": latent_dim(params), "hidden": hidden}


def _check_config(model: VAE, config: dict[str, Any], where: str) -> None:
    """The spec the params hold against the config's input_shape, latent_dim and hidden, where given
    (an MLP's or a convolutional model's: ``hidden`` is the dense layers' widths)."""
    problems = []
    if "input_shape" in config and config["input_shape"] is not None:
        d = math.prod(config["input_shape"])
        if d != model.data_dim:
            problems.append(f"input_shape {list(config['input_shape'])} ({d} features) but the params read "
                            f"{model.data_dim}")  # fmt: skip
    if "latent_dim" in config and config["latent_dim"] != model.latent_dim:
        problems.append(f"latent_dim {config['latent_dim']} but the params' latent_dim is {model.latent_dim}")
    if "hidden" in config and config["hidden"] is not None and list(config["hidden"]) != list(model.hidden):
        problems.append(f"hidden {list(config['hidden'])} but the params' hidden layers are {list(model.hidden)} wide")
    if "activation" in config and config["activation"] not in ACTIVATIONS:
        raise CheckpointError(f"{where}: the config's activation must be one of {ACTIVATIONS}; "
                              f"got {config['activation']!r}")  # fmt: skip
    if problems:
        raise CheckpointError(f"{where}: the params' shapes do not match the config: " + "; ".join(problems))


def _check_length(data: bytes, path: Path) -> dict[str, str]:
    """Parse the safetensors header; a file shorter than it says is truncated."""
    if len(data) < 8:
        raise CheckpointError(f"{path}: truncated checkpoint: {len(data)} bytes, shorter than the 8-byte header size")
    n = int.from_bytes(data[:8], "little")
    if 8 + n > len(data) and data[8:9] not in (b"{", b""):  # an absurd size and no JSON: another kind of file
        raise CheckpointError(f"{path}: not a safetensors checkpoint (a safetensors file is an 8-byte header size, "
                              f"then a JSON header; this one starts with {data[:12]!r})")  # fmt: skip
    if 8 + n > len(data):
        raise CheckpointError(
            f"{path}: truncated checkpoint: the header alone needs {8 + n} bytes, the file has {len(data)}"
        )
    try:
        header = json.loads(data[8 : 8 + n])
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        metadata = header.get("__metadata__") or {}
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError) as e:
        raise CheckpointError(f"{path}: corrupt checkpoint: the header is not safetensors JSON "
                              f"({'nested too deeply' if isinstance(e, RecursionError) else e})") from None
    if 8 + n + end > len(data):
        raise CheckpointError(
            f"{path}: truncated checkpoint: its header describes {8 + n + end} bytes, the file has {len(data)}"
        )
    return metadata


def _flatten(node: Any, key: str, tensors: dict[str, Tensor]) -> Any:
    """Tensors go to ``tensors[dotted key]``; the returned JSON spec rebuilds the tree."""
    if isinstance(node, Tensor):
        if key in tensors:
            raise ValueError(f"two leaves of the tree flatten to the same key {key!r}")
        tensors[key] = node.detach()
        return {"tensor": key}
    if isinstance(node, dict):
        if not all(isinstance(k, str) for k in node):
            raise TypeError(f"dict keys must be str to checkpoint; got {sorted(map(repr, node))} at {key!r}")
        return {"dict": [[k, _flatten(v, f"{key}.{k}", tensors)] for k, v in node.items()]}
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        cls = type(node)
        if f"{cls.__module__}:{cls.__qualname__}" not in STATE_TYPES:
            raise TypeError(f"cannot checkpoint a {cls.__qualname__} at {key!r}: checkpoints rebuild only vaefunc's "
                            f"state types {sorted(STATE_TYPES)} (store other state as tuples or dicts)")  # fmt: skip
        items = [_flatten(v, f"{key}.{f}", tensors) for f, v in zip(node._fields, node)]
        return {"namedtuple": f"{cls.__module__}:{cls.__qualname__}", "fields": list(node._fields), "items": items}
    if isinstance(node, (tuple, list)):
        kind = "tuple" if isinstance(node, tuple) else "list"
        return {kind: [_flatten(v, f"{key}.{i}", tensors) for i, v in enumerate(node)]}
    if node is None or isinstance(node, (bool, int, float, str)):
        return {"value": node}
    raise TypeError(f"cannot checkpoint a {type(node).__name__} at {key!r}: expected tensors, dicts, tuples, numbers")


def _unflatten(spec: Any, tensors: dict[str, Tensor]) -> Any:
    if "tensor" in spec:
        if spec["tensor"] not in tensors:
            raise KeyError(f"the tensor {spec['tensor']!r} is missing")
        return tensors[spec["tensor"]]
    if "dict" in spec:
        return {k: _unflatten(v, tensors) for k, v in spec["dict"]}
    if "namedtuple" in spec:
        return _namedtuple(spec["namedtuple"], spec["fields"])(*(_unflatten(v, tensors) for v in spec["items"]))
    if "tuple" in spec:
        return tuple(_unflatten(v, tensors) for v in spec["tuple"])
    if "list" in spec:
        return [_unflatten(v, tensors) for v in spec["list"]]
    if "value" in spec:
        return spec["value"]
    raise ValueError(f"unknown tree node {spec!r}")


STATE_TYPES = {f"{cls.__module__}:{cls.__qualname__}": cls for cls in (AdamState, ScaleByLearningRateState, EmptyState)}
"""The NamedTuples a checkpoint may hold, by the name it stores: vaefunc's optimizer states, nothing else."""


def _namedtuple(name: str, fields: list[str]) -> type:
    """The state class a checkpoint names, from :data:`STATE_TYPES` only: no name read from a file
    imports a module or makes a class."""
    cls = STATE_TYPES.get(name)
    if cls is None or list(cls._fields) != list(fields):
        raise CheckpointError(f"the checkpoint names a state type {name!r} with fields {fields}; only vaefunc's own "
                              f"{sorted(STATE_TYPES)} are rebuilt")  # fmt: skip
    return cls


def _unshared(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Contiguous CPU copies; safetensors refuses tensors that share memory (Adam's
    initial mu and nu are the same zeros)."""
    return {k: v.to("cpu", copy=True).contiguous() for k, v in tensors.items()}
