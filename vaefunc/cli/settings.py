"""A run's settings: a model spec, a training config and the data options.

:func:`from_args` makes a new run's settings from the flags (a preset's first,
then the flags given) and checks the combinations of flags, naming flags;
:func:`from_json` reads them back from a run's ``config.json`` or a
checkpoint's config, in this version's layout::

    {"run_id": a uuid4's hex, "model": VAE.to_dict(), "train": TrainConfig.to_dict(),
     "data": {"name", "limit", "size", "color", "labels_per_class", "input_shape", "n_train", "n_test"},
     "preset": NAME or null, "versions": {"vaefunc", "torch", "python"},
     "command": "vaefunc train ...", "resumed_with": "vaefunc train ... --resume"}

or in the flat layout of vaefunc 0.1 (one dict of every setting, the Adam
schedule under "optimizer"), or as a bare :meth:`vaefunc.TrainConfig.to_dict`.

``--config FILE`` (:func:`read_file`) gives a new run's settings from a JSON
file in the sections above (a run's config.json is one) or a TOML file with
the same sections; the order of precedence is the defaults, the file's
preset, the file's settings, a ``--preset`` flag, and the flags given.
"""

from __future__ import annotations

import dataclasses
import platform
import sys
from pathlib import Path
from typing import Any, NamedTuple

import torch

from .. import __version__
from .. import data as vdata
from .._io import parse_json, read_small_text
from ..config import DEFAULTS, FIELDS, MODEL_FIELDS, TrainConfig
from ..gradients import GRADIENTS
from ..presets import SETUPS
from ..schedules import parse
from ..spec import VAE
from .parser import DEFAULT_DATA, UsageError

MODEL_FLAGS = ("arch", "latent_dim", "hidden", "channels", "kernel", "n_classes", "semi_supervised", "activation",
               "likelihood", "obs_std", "learn_obs_std", "prior", "prior_components", "posterior", "flow_steps",
               "top_latent_dim", "top_hidden")  # fmt: skip
"""The :class:`vaefunc.VAE` fields a flag sets (``latent_dim``: ``--latent-dim``)."""
DEEP_DEFAULTS = {"posterior": "gaussian", "flow_steps": None, "top_latent_dim": 0, "top_hidden": None}
"""The deeper models' fields at their defaults, left out of a run's settings (older runs' settings read the same)."""
TRAIN_FLAGS = ("epochs", "batch_size", "lr", "lr_schedule", "beta", "kl_schedule", "objective", "k", "gradient",
               "binarize", "seed", "compile", "autocast", "alpha", "labelled_share")  # fmt: skip
"""The :class:`vaefunc.TrainConfig` fields a flag sets."""
DATA_FLAGS = {"data": "name", "limit": "limit", "size": "size", "color": "color",
              "labels-per-class": "labels_per_class"}  # fmt: skip
"""Data flag (without dashes) -> key of the settings' "data" section."""
RESUMABLE = ("epochs", "device", "threads", "progress", "out", "resume")
"""Flags a resumed run may change; every other one given must match the run's settings."""
PER_MODEL = ("beta", "lr", "seed")
"""The settings a sweep takes one value of per model."""
_OLD_MODEL_KEYS = ("latent_dim", "hidden", "activation", "likelihood", "obs_std", "learn_obs_std", "prior",
                   "prior_components", "input_shape")  # fmt: skip
_OLD_ADAM = (("b1", "adam_b1"), ("b2", "adam_b2"), ("eps", "adam_eps"))


FILE_SECTIONS = ("model", "train", "data", "preset")
"""The sections a ``--config`` file holds."""
FILE_RECORDS = ("run_id", "versions", "command", "resumed_with")
"""What a run's config.json records besides its settings: read and ignored by ``--config``."""
DATA_KEYS = ("name", "limit", "size", "color", "labels_per_class")
"""The "data" section's settings (a run's config.json also records input_shape, n_train and n_test)."""
_DATA_RECORDS = ("input_shape", "n_train", "n_test")
_WHERE = ("device", "progress", "distributed")  # train fields that say where and how a run ran, not what it is
_FLAG_OF_DATA = {v: k for k, v in DATA_FLAGS.items()}


class ConfigFile(NamedTuple):
    """A ``--config`` file's settings, checked: VAE fields, TrainConfig fields, data options, a preset."""

    model: dict[str, Any]
    train: dict[str, Any]
    data: dict[str, Any]
    preset: str | None


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
    """A new run's settings: the ``--config`` file's and the preset's, then the flags given, checked
    (UsageError, naming flags)."""
    model, train, data, preset = _fields(args)
    _check(model, train, args.given)
    _check_semi_supervised(model, train, data)
    return Settings(model, TrainConfig(**train), data, preset)


def _fields(args: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], str | None]:
    """The VAE fields, TrainConfig fields, data options and preset that the flags, the ``--config`` file
    and the presets give, unchecked. Precedence, lowest first: the flags' defaults, the file's preset,
    the file's settings, the --preset flag's, the flags given."""
    given, file = args.given, getattr(args, "file", None)
    model = {f: _from_flag(f, getattr(args, f)) for f in MODEL_FLAGS}
    train = {f: _from_flag(f, getattr(args, f)) for f in TRAIN_FLAGS}
    data = {"name": data_name(args.data), "limit": args.limit, "size": args.size, "color": args.color,
            "labels_per_class": args.labels_per_class}  # fmt: skip
    preset = args.preset
    layers = []  # (model fields, train fields) to apply for the settings no flag gives, in order
    if file is not None:
        if "preset" not in given:
            preset = file.preset
            if preset is not None:
                layers.append((SETUPS[preset]["model"], SETUPS[preset]["train"]))
        layers.append((file.model, file.train))
        data |= {k: data_name(v) if k == "name" else v for k, v in file.data.items()
                 if _FLAG_OF_DATA[k] not in given}  # fmt: skip
    if args.preset is not None and (file is None or "preset" in given):
        layers.append((SETUPS[args.preset]["model"], SETUPS[args.preset]["train"]))
    for model_layer, train_layer in layers:
        model |= {k: v for k, v in model_layer.items() if flag(k) not in given}
        train |= {k: v for k, v in train_layer.items() if flag(k) not in given}
    beta_set = "beta" in given or (file is not None and "beta" in file.train)
    if not beta_set and (train["kl_schedule"] is not None or train["objective"] == "iwae"):
        train["beta"] = 1.0  # a sweep's default betas are for the beta * KL form only
    model = {k: v for k, v in model.items() if k not in DEEP_DEFAULTS or v != DEEP_DEFAULTS[k]}
    return model, train, data, preset


def read_file(path: str | Path) -> ConfigFile:
    """A ``--config`` file: JSON (a run's config.json is one), or TOML if its name ends in .toml.

    It holds the sections "model" (:class:`vaefunc.VAE` fields but the input
    shape, which is the data's), "train" (:class:`vaefunc.TrainConfig` fields),
    "data" (name, limit, size, color, labels_per_class) and "preset" (a name), each optional;
    a run's records (versions, command, its data's shape and sizes) are
    ignored; the flat config.json of vaefunc 0.1 is read as well. Values are as config.json holds them;
    TOML, which has no null,
    may spell None as "none" where the flag does. An unknown key is an error
    naming it.
    """
    path = Path(path)
    try:
        text = read_small_text(path)
    except ValueError as e:
        raise UsageError(f"--config {path} {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--config {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    toml = path.suffix.lower() == ".toml"
    try:
        raw = _toml().loads(text) if toml else parse_json(text)
    except RecursionError:
        raise UsageError(f"--config {path}: not valid TOML (nested too deeply to parse)") from None
    except ValueError as e:  # json.JSONDecodeError and tomllib.TOMLDecodeError are ValueErrors
        raise UsageError(f"--config {path}: not valid {'TOML' if toml else 'JSON'} ({e})"
                         + ("" if toml else "; a file named *.toml is read as TOML")) from None  # fmt: skip
    if not isinstance(raw, dict):
        raise UsageError(f"--config {path} must hold an object with sections {', '.join(FILE_SECTIONS)}; "
                         f"got {type(raw).__name__}")  # fmt: skip
    if not toml and _is_flat(raw):
        raw = _sections_of(_from_flat(raw))
    known = {"model": {f.name for f in dataclasses.fields(VAE)}, "train": set(FIELDS),
             "data": set(DATA_KEYS) | set(_DATA_RECORDS)}  # fmt: skip
    unknown = sorted(set(raw) - set(FILE_SECTIONS) - set(FILE_RECORDS))
    sections = {}
    for name in known:
        section = raw.get(name) or {}
        if not isinstance(section, dict):
            raise UsageError(f"--config {path}: {name} must be a section of settings; got {section!r}")
        unknown += [f"{name}.{k}" for k in sorted(set(section) - known[name])]
        sections[name] = section
    if unknown:
        raise UsageError(f"--config {path}: unknown keys {', '.join(unknown)} (the sections are model: the "
                         f"VAE's fields, train: TrainConfig's fields, data: {', '.join(DATA_KEYS)}, and preset)")  # fmt: skip
    preset = raw.get("preset")
    if preset is not None and preset not in SETUPS:
        raise UsageError(f"--config {path}: unknown preset {preset!r}; the presets are {sorted(SETUPS)}")
    train = {k: v for k, v in sections["train"].items()}
    for name in MODEL_FIELDS:  # TrainConfig's soft-deprecated model fields: their defaults, as config.json has them
        if name in train and _from_flag(name, train.pop(name)) != DEFAULTS[name]:
            raise UsageError(f"--config {path}: train.{name} belongs in the model section")
    model = {k: _from_flag(k, v) for k, v in sections["model"].items() if k != "input_shape"}
    return ConfigFile(model, {k: _from_flag(k, v) for k, v in train.items()},
                      {k: v for k, v in sections["data"].items() if k in DATA_KEYS}, preset)  # fmt: skip


def _is_flat(raw: dict[str, Any]) -> bool:
    """Whether a JSON config is vaefunc 0.1's flat config.json: no sections, and its version record."""
    return not any(isinstance(raw.get(name), dict) for name in ("model", "train", "data")) and "vaefunc_version" in raw


def _sections_of(settings: Settings) -> dict[str, Any]:
    """Settings in a --config file's sections."""
    return {"model": {k: v for k, v in settings.model.items() if k != "input_shape"},
            "train": settings.config.to_dict(), "data": {k: v for k, v in settings.data.items() if k in DATA_KEYS},
            "preset": settings.preset}  # fmt: skip


def apply_file(args: Any) -> None:
    """Read ``args.config`` (if any) into ``args.file``; its device and progress stand in for --device and
    --progress when those flags are not given (distributed is torchrun's to decide)."""
    args.file = None
    if getattr(args, "config", None) is None:
        return
    if args.resume:
        raise UsageError("--config sets up a new run; a resumed run keeps the settings of its config.json")
    args.file = read_file(args.config)
    where = {k: args.file.train.pop(k) for k in _WHERE if k in args.file.train}
    if where.get("device") is not None and "device" not in args.given:
        try:
            args.device = where["device"] if where["device"] == "auto" else torch.device(where["device"]).type
        except (RuntimeError, TypeError, ValueError):
            raise UsageError(f"--config {args.config}: train.device must be auto, cpu or cuda; got "
                             f"{where['device']!r}") from None  # fmt: skip
    if "progress" in where and "progress" not in args.given:
        shown = {True: "auto", False: "never", "always": "always"}
        value = where["progress"]
        if not any(value is v or (isinstance(v, str) and value == v) for v in shown):
            raise UsageError(f"--config {args.config}: train.progress must be true, false or \"always\"; got "
                             f"{value!r}")  # fmt: skip
        args.progress = shown[value]


def _toml():
    """tomllib (Python >= 3.11), or tomli, its backport."""
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:
        import tomli
    except ImportError:
        raise UsageError("--config FILE.toml needs the tomli package on Python < 3.11: pip install tomli") from None
    return tomli


def _from_flag(field: str, value: Any) -> Any:
    """A flag's value (or a --config file's) as the setting holds it."""
    if field in ("learn_obs_std", "binarize", "lr_schedule", "autocast") and value == "none":
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
    if train["gradient"] not in GRADIENTS[train["objective"]]:
        raise UsageError(f"--gradient {train['gradient']} is not an estimator of --objective {train['objective']}; "
                         f"it takes {' or '.join(GRADIENTS[train['objective']])}")  # fmt: skip
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


def _check_semi_supervised(model: dict[str, Any], train: dict[str, Any], data: dict[str, Any]) -> None:
    """--semi-supervised needs --n-classes; its own settings need it."""
    if model["semi_supervised"] and not model["n_classes"]:
        raise UsageError("--semi-supervised infers the class of unlabelled examples; give --n-classes N")
    if not model["semi_supervised"]:
        own = [flag(k) for k in ("alpha",) if train[k] is not None]
        own += [flag(k) for k in ("labelled_share",) if train[k] != DEFAULTS[k]]
        own += ["labels-per-class"] * (data.get("labels_per_class") is not None)
        if own:
            raise UsageError(f"--{own[0]} is for a semi-supervised model: add --semi-supervised (and --n-classes N)")


def one_seed(config: TrainConfig) -> int:
    """The seed of one model's evaluation: the config's seed, or a sweep's first (each member's picked config has its own)."""
    return config.seed[0] if isinstance(config.seed, tuple) else config.seed


def one_beta(config: TrainConfig) -> float:
    """One model's beta (a train run has one; a tuple is a sweep's)."""
    return config.beta[0] if isinstance(config.beta, tuple) else config.beta


def members_of(config: TrainConfig) -> int:
    """m, the number of models of a sweep's settings: its longest per-model beta, lr or seed (1 for none)."""
    return max(len(v) if isinstance(v, tuple) else 1 for v in (getattr(config, name) for name in PER_MODEL))


# ---------------------------------------------------------------- config.json


def to_json(settings: Settings, *, command: str, resumed_with: str | None = None,
            run_id: str | None = None) -> dict[str, Any]:  # fmt: skip
    """config.json (and the checkpoint's config): the settings, the versions, the command and the run's id
    (which a resumed run's checkpoint must carry too)."""
    out: dict[str, Any] = {"run_id": run_id} if run_id is not None else {}
    out |= {
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
    optimizer: dict[str, Any] = old["optimizer"] if isinstance(old.get("optimizer"), dict) else {}
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
    model, train, data, _ = _fields(args)
    want = _flag_values(model, train, data, args.preset)
    have = _flag_values(run.model, run.config.to_dict(), run.data, run.preset)
    for key in [a[2:].split("=", 1)[0] for a in args.argv if a.startswith("--")]:
        if key in RESUMABLE or key not in want or want[key] == have.get(key):
            continue
        raise UsageError(f"--{key} {want[key]!r} differs from the run's {have.get(key)!r}; a resumed run keeps its "
                         "settings (only --epochs and --device may change)")  # fmt: skip


RESUMED_FIELDS = ("epochs", "device", "progress", "distributed")
"""TrainConfig fields that config.json and a resumed run's checkpoint may disagree on (set anew by each command)."""


def check_own_run(config: dict[str, Any], ckpt: Any, where: Any) -> None:
    """The checkpoint in a run folder must be that folder's run: the same run id as config.json (when both
    have one: runs of older vaefunc have none), the spec config.json describes, and its settings."""
    saved = ckpt.config if isinstance(ckpt.config, dict) else {}
    ours, theirs = config.get("run_id"), saved.get("run_id")
    hint = ("a checkpoint copied from another run, or config.json edited? Put the run's own files back, or start "
            "a new run with another --out")  # fmt: skip
    if ours is not None and theirs is not None and ours != theirs:
        raise UsageError(f"{where} is not this folder's run: its run id {theirs!r} differs from config.json's "
                         f"{ours!r} ({hint})")  # fmt: skip
    problems = []
    spec = {k: _plain(v) for k, v in ckpt.model.to_dict().items()}
    for key, value in from_json(config).model.items():
        if key in spec and _plain(value) != spec[key]:
            problems.append(f"model {key} {_plain(value)!r} in config.json, {spec[key]!r} in the checkpoint")
    if saved:
        want, have = from_json(config), from_json(saved)
        a, b = want.config.to_dict(), have.config.to_dict()
        problems += [f"{k} {_plain(a[k])!r} in config.json, {_plain(b.get(k))!r} in the checkpoint" for k in a
                     if k not in RESUMED_FIELDS and _plain(a[k]) != _plain(b.get(k))]  # fmt: skip
        problems += [f"data {k} {want.data.get(k)!r} in config.json, {have.data.get(k)!r} in the checkpoint"
                     for k in DATA_FLAGS.values() if want.data.get(k) != have.data.get(k)]  # fmt: skip
    if problems:
        raise UsageError(f"{where} is not this folder's run: " + "; ".join(problems[:3])
                         + (f" and {len(problems) - 3} more" if len(problems) > 3 else "") + f" ({hint})")


def _flag_values(model: dict, train: dict, data: dict, preset: str | None) -> dict[str, Any]:
    """flag -> its setting, in one form for both sides of a comparison (lists, canonical KL schedules)."""
    values = {flag(k): _plain(v) for k, v in (model | train).items()}
    if values.get("kl-schedule") is not None:
        values["kl-schedule"] = parse(values["kl-schedule"]).spec
    return values | {f: _plain(data.get(key)) for f, key in DATA_FLAGS.items()} | {"preset": preset}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
