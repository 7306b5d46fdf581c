"""A run's settings: a model spec, a training config and the data options.

:func:`from_args` makes a new run's settings from the flags (a preset's first,
then the flags given) and checks the combinations of flags, naming flags;
:func:`from_json` reads them back from a run's ``config.json`` or a
checkpoint's config, in this version's layout::

    {"model": VAE.to_dict(), "train": TrainConfig.to_dict(),
     "data": {"name", "limit", "size", "color", "input_shape", "n_train", "n_test"},
     "preset": NAME or null, "versions": {"vaefunc", "torch", "python"},
     "command": "vaefunc train ...", "resumed_with": "vaefunc train ... --resume"}

or in the flat layout of vaefunc 0.1 (one dict of every setting, the Adam
schedule under "optimizer"), or as a bare :meth:`vaefunc.TrainConfig.to_dict`.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any, NamedTuple

import torch

from .. import __version__
from .. import data as vdata
from ..config import FIELDS, MODEL_FIELDS, TrainConfig
from ..presets import SETUPS
from ..schedules import parse
from ..spec import VAE
from .parser import DEFAULT_DATA, UsageError

MODEL_FLAGS = ("arch", "latent_dim", "hidden", "channels", "kernel", "n_classes", "activation", "likelihood",
               "obs_std", "learn_obs_std", "prior", "prior_components")  # fmt: skip
"""The :class:`vaefunc.VAE` fields a flag sets (``latent_dim``: ``--latent-dim``)."""
TRAIN_FLAGS = ("epochs", "batch_size", "lr", "lr_schedule", "beta", "kl_schedule", "objective", "k", "binarize",
               "seed", "compile")  # fmt: skip
"""The :class:`vaefunc.TrainConfig` fields a flag sets."""
DATA_FLAGS = {"data": "name", "limit": "limit", "size": "size", "color": "color"}
"""Data flag -> key of the settings' "data" section."""
RESUMABLE = ("epochs", "device", "progress", "out", "resume")
"""Flags a resumed run may change; every other one given must match the run's settings."""
PER_MODEL = ("beta", "lr", "seed")
"""The settings a sweep takes one value of per model."""
_OLD_MODEL_KEYS = ("latent_dim", "hidden", "activation", "likelihood", "obs_std", "learn_obs_std", "prior",
                   "prior_components", "input_shape")  # fmt: skip
_OLD_ADAM = (("b1", "adam_b1"), ("b2", "adam_b2"), ("eps", "adam_eps"))


class Settings(NamedTuple):
    """Everything a run is: what :func:`to_json` writes and :func:`from_json` reads."""

    model: dict[str, Any]  # VAE fields; with "input_shape" once the data is known
    config: TrainConfig
    data: dict[str, Any]  # name, limit, size, color; input_shape, n_train, n_test once loaded
    preset: str | None = None

    def spec(self) -> VAE:
        """The model spec (the settings must hold the input shape)."""
        return VAE.from_dict(self.model)


def flag(field: str) -> str:
    """The flag of a setting, without dashes: ``latent_dim`` -> ``latent-dim``."""
    return field.replace("_", "-")


def from_args(args: Any) -> Settings:
    """A new run's settings: the preset's, then the flags given, checked (UsageError, naming flags)."""
    model, train, data = _fields(args)
    _check(model, train, args.given)
    return Settings(model, TrainConfig(**train), data, args.preset)


def _fields(args: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The VAE fields, TrainConfig fields and data options that the flags (and the preset) give, unchecked."""
    model = {f: _from_flag(f, getattr(args, f)) for f in MODEL_FLAGS}
    train = {f: _from_flag(f, getattr(args, f)) for f in TRAIN_FLAGS}
    if args.preset is not None:
        setup = SETUPS[args.preset]
        model |= {k: v for k, v in setup["model"].items() if flag(k) not in args.given}
        train |= {k: v for k, v in setup["train"].items() if flag(k) not in args.given}
    if "beta" not in args.given and (train["kl_schedule"] is not None or train["objective"] == "iwae"):
        train["beta"] = 1.0  # a sweep's default betas are for the beta * KL form only
    data = {"name": data_name(args.data), "limit": args.limit, "size": args.size, "color": args.color}
    return model, train, data


def _from_flag(field: str, value: Any) -> Any:
    """A flag's value as the setting holds it."""
    if field in ("learn_obs_std", "binarize") and value == "none":
        return None
    if field == "compile":
        return {"yes": True, "no": False}.get(value, value)
    if field in PER_MODEL and isinstance(value, list):  # sweep: one value, or one per model
        return value[0] if len(value) == 1 else tuple(value)
    return tuple(value) if isinstance(value, list) else value


def data_name(data: str | None) -> str | None:
    """A dataset name as it is; a path made absolute, so --resume and eval work from any folder."""
    if data is None or data in vdata.DATASETS or not Path(data).exists():
        return data
    return str(Path(data).resolve())


def _check(model: dict[str, Any], train: dict[str, Any], given: set[str]) -> None:
    """Combinations of flags that the library would reject, reported before any work, in terms of flags."""
    iwae, beta, schedule = train["objective"] == "iwae", train["beta"], train["kl_schedule"]
    unit_beta = all(b == 1.0 for b in (beta if isinstance(beta, tuple) else (beta,)))
    if iwae and (not unit_beta or schedule is not None):
        raise UsageError("the iwae objective takes no --beta or --kl-schedule (the bound has no KL weight)")
    if not iwae and "k" in given:
        raise UsageError(f"--k sets the samples of --objective iwae; this run's objective is {train['objective']}")
    if schedule is not None and not unit_beta:
        raise UsageError("give --beta or --kl-schedule, not both (warmup:STEPS:BETA warms up to BETA)")
    if model["learn_obs_std"] is not None and model["likelihood"] != "gaussian":
        raise UsageError(f"--learn-obs-std needs --likelihood gaussian; got --likelihood {model['likelihood']}")
    if schedule is not None and parse(schedule).form == "free_bits" and model["prior"] != "normal":
        raise UsageError("--kl-schedule free-bits needs --prior normal (a closed-form KL per latent dimension)")
    if "prior-components" in given and model["prior"] == "normal":
        raise UsageError("--prior-components sets the size of --prior mog or vamp; this run's prior is normal")
    if "obs-std" in given and model["likelihood"] != "gaussian":
        raise UsageError(f"--obs-std needs --likelihood gaussian; got --likelihood {model['likelihood']}")
    conv_flags = sorted({"channels", "kernel"} & given)
    if conv_flags and model["arch"] != "conv":
        raise UsageError(f"--{conv_flags[0]} is for --arch conv; this run's arch is {model['arch']}")
    sizes = {name: len(train[name]) for name in PER_MODEL if isinstance(train[name], tuple)}
    if len(set(sizes.values())) > 1:
        got = ", ".join(f"{n} values of --{name}" for name, n in sizes.items())
        raise UsageError(f"--beta, --lr and --seed take one value, or one per model and as many each; got {got}")


def members(args: Any) -> int:
    """m, the number of models of a sweep: the length of its longest --beta, --lr or --seed."""
    return max(len(getattr(args, name)) for name in PER_MODEL)


# ---------------------------------------------------------------- config.json


def to_json(settings: Settings, *, command: str, resumed_with: str | None = None) -> dict[str, Any]:
    """config.json (and the checkpoint's config): the settings, the versions and the command."""
    out = {
        "model": dict(settings.model),
        "train": settings.config.to_dict(),
        "data": dict(settings.data),
        "preset": settings.preset,
        "versions": {"vaefunc": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "command": command,
    }
    if resumed_with is not None:
        out["resumed_with"] = resumed_with
    return out


def from_json(config: dict[str, Any] | None) -> Settings:
    """Settings from a config.json or a checkpoint's config, in either layout (None: the defaults)."""
    if not isinstance(config, dict):
        config = {}
    if isinstance(config.get("model"), dict) and isinstance(config.get("train"), dict):
        data = {"name": DEFAULT_DATA} | dict(config.get("data") or {})
        return Settings(dict(config["model"]), TrainConfig.from_dict(config["train"]), data, config.get("preset"))
    return _from_flat(config)


def _from_flat(old: dict[str, Any]) -> Settings:
    """The settings of vaefunc 0.1's flat config (or a bare TrainConfig dict), missing ones at their defaults."""
    model = {k: old[k] for k in _OLD_MODEL_KEYS if old.get(k) is not None}
    train = {k: v for k, v in old.items() if k in FIELDS and k not in MODEL_FIELDS}
    optimizer = old.get("optimizer") if isinstance(old.get("optimizer"), dict) else {}
    if optimizer.get("lr") == "iwae-paper":
        train["lr_schedule"] = f"iwae-paper:{optimizer.get('stages', 8)}"
    train |= {new: optimizer[key] for key, new in _OLD_ADAM if key in optimizer}
    if train.get("compile") in ("yes", "no"):
        train["compile"] = train["compile"] == "yes"
    data = {"name": old.get("data") or DEFAULT_DATA}
    data |= {k: old.get(k) for k in ("limit", "size", "color", "input_shape", "n_train", "n_test")}
    return Settings(model, TrainConfig.from_dict(train), data, old.get("preset"))


# ---------------------------------------------------------------- resuming


def check_resume(run: Settings, args: Any) -> None:
    """Every flag given to a resumed run, but the resumable ones, must say what the run's settings say."""
    model, train, data = _fields(args)
    want = _flag_values(model, train, data, args.preset)
    have = _flag_values(run.model, run.config.to_dict(), run.data, run.preset)
    for key in [a[2:].split("=", 1)[0] for a in args.argv if a.startswith("--")]:
        if key in RESUMABLE or key not in want or want[key] == have.get(key):
            continue
        raise UsageError(f"--{key} {want[key]!r} differs from the run's {have.get(key)!r}; a resumed run keeps its "
                         "settings (only --epochs and --device may change)")  # fmt: skip


def _flag_values(model: dict, train: dict, data: dict, preset: str | None) -> dict[str, Any]:
    """flag -> its setting, in one form for both sides of a comparison (lists, canonical KL schedules)."""
    values = {flag(k): _plain(v) for k, v in (model | train).items()}
    if values.get("kl-schedule") is not None:
        values["kl-schedule"] = parse(values["kl-schedule"]).spec
    return values | {f: _plain(data.get(key)) for f, key in DATA_FLAGS.items()} | {"preset": preset}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
