"""Shared validators for the public functions' arguments.

Each raises ``ValueError`` (a value out of range, an unknown name) or
``TypeError`` (the wrong kind of thing) naming the argument, what was
expected and what was given. They run once per call, on the host, before any
work; nothing here is for use inside a step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

MAX_SEED = 2**63 - 1
"""The largest seed a ``torch.Generator`` takes."""
MAX_WIDTH = 2**31 - 1
"""The widest layer, image side or class count a spec takes (torch sizes are int64; anything near this is a typo)."""
MAX_EPOCHS = 10**9
"""The most epochs a run takes (an epoch count beyond it is a typo, and its step counts would near int64's)."""
MAX_LAYERS = 1024
"""The most entries a shape or a list of layer widths takes (a config file listing millions is refused at once)."""
MAX_PARAM_BYTES = 2**36
"""The most bytes of params ``init`` allocates (64 GiB): a larger model is a mistake, refused before allocating."""


def renamed(new_value: Any, old_value: Any, *, new: str, old: str) -> Any:
    """The value of an argument given under its current name or its older one, not both
    (``labels=`` and ``y=``; ``m=`` and ``k=``)."""
    if old_value is not None and new_value is not None:
        raise TypeError(f"give {new}= (the current name), not both {new}= and {old}=")
    return old_value if new_value is None else new_value


def show(value: Any) -> str:
    """``value`` for an error message, on one line: a tensor or array by its kind and shape, others by a
    repr cut at 80 characters."""
    if isinstance(value, torch.Tensor) and value.numel() > 1:
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, np.ndarray) and value.size > 1:
        return f"a {value.dtype} array of shape {value.shape}"
    text = " ".join(repr(value).split())
    return text if len(text) <= 80 else text[:77] + "..."


def integer(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum]; bools are not ints here.

    Example:
        >>> integer("epochs", 10, minimum=0)
        10
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int{_range(minimum, maximum)}; got {show(value)}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be an int{_range(minimum, maximum)}; got {show(value)}")
    return int(value)


def positive_int(name: str, value: Any, *, maximum: int | None = None) -> int:
    """``value`` as an int >= 1 (and <= maximum): "n must be a positive int; got 0"."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {show(value)}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be a positive int of at most {maximum}; got {show(value)}")
    return int(value)


def seed(value: Any, name: str = "seed") -> int:
    """A seed: an int in [0, 2**63 - 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= MAX_SEED:
        raise ValueError(f"{name} must be an int >= 0 (at most 2**63 - 1); got {show(value)}")
    return int(value)


def number(name: str, value: Any, *, minimum: float | None = None, strict: bool = False) -> float:
    """``value`` as a finite float, >= minimum (> with ``strict``)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    ok = ok and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if strict else value >= minimum
    if not ok:
        bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum}"
        raise ValueError(f"{name} must be a finite number{bound}; got {show(value)}")
    return float(value)


def choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices`` (compared by equality, types included)."""
    if not _one_of(value, choices):
        raise ValueError(f"{name} must be one of {tuple(choices)}; got {show(value)}")
    return value


def option(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """:func:`choice` for settings that mix True and False with strings (1 is not True), its error
    listing them as a sentence (``compile must be True, False or 'auto'``)."""
    if not _one_of(value, choices):
        listed = ", ".join(map(repr, choices[:-1])) + f" or {choices[-1]!r}"
        raise ValueError(f"{name} must be {listed}; got {show(value)}")
    return value


def _one_of(value: Any, choices: Sequence[Any]) -> bool:
    return any(type(value) is type(c) and value == c for c in choices)  # the type first: a tensor's == is no bool


def int_tuple(name: str, value: Any, *, minimum: int = 1, allow_empty: bool = True, example: str = "") -> tuple[int, ...]:
    """A sequence of ints >= minimum as a tuple (a lone int is refused: ``hidden=400`` is a mistake)."""
    hint = f", e.g. {example}" if example else ""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a sequence of ints{hint}; got {show(value)}")
    if len(value) > MAX_LAYERS:
        raise ValueError(f"{name} must have at most {MAX_LAYERS} entries; got {len(value)}")
    items = tuple(value)
    if (not items and not allow_empty) or not all(
        not isinstance(v, bool) and isinstance(v, (int, np.integer)) and v >= minimum for v in items
    ):
        what = "positive ints" if minimum == 1 else f"ints >= {minimum}"
        raise ValueError(f"{name} must be {what} (a {'non-empty ' if not allow_empty else ''}sequence){hint}; "
                         f"got {show(value)}")  # fmt: skip
    return tuple(int(v) for v in items)


def param_bytes(shapes: dict[str, tuple[int, ...]], dtype: torch.dtype, members: int = 1) -> None:
    """The params of these shapes (times ``members``) must fit :data:`MAX_PARAM_BYTES`."""
    nbytes = members * sum(math.prod(s) for s in shapes.values()) * dtype.itemsize
    if nbytes > MAX_PARAM_BYTES:
        raise ValueError(f"the params would take {nbytes / 2**30:.3g} GiB, over the {MAX_PARAM_BYTES / 2**30:.0f} GiB "
                         "a model may take; check input_shape, hidden and latent_dim")  # fmt: skip


def float_dtype(value: Any, name: str = "dtype") -> torch.dtype:
    """A floating-point ``torch.dtype`` (a string such as ``"float32"`` is refused with a hint)."""
    if not isinstance(value, torch.dtype):
        raise TypeError(f"{name} must be a torch.dtype such as torch.float32; got {show(value)}")
    if not value.is_floating_point:
        raise TypeError(f"{name} must be a floating-point dtype; got {value}")
    return value


def device_available(device: torch.device, name: str = "device") -> None:
    """A CUDA (or MPS) device that this machine has: refused clearly when a run starts, not at its first copy."""
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise ValueError(f"{name} must be a device this machine has; got {str(device)!r} with "
                             f"{count} CUDA device(s) here")  # fmt: skip
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"{name} must be a device this machine has; got 'mps', which is not available here")


def _range(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    return f" <= {maximum}" if maximum is not None else ""


def params(shapes: dict[str, tuple[int, ...]], value: Any, *, stacked: bool = False) -> None:
    """``value`` must be a dict with exactly the keys of ``shapes``, tensors of those shapes (with one
    shared leading axis when ``stacked``), of one floating-point dtype on one device."""
    _tensor_dict(value, required=list(shapes))
    extra = sorted(set(value) - set(shapes))
    if extra:
        raise ValueError(f"params has keys this model does not use: {extra}; expected exactly {sorted(shapes)}")
    lead = {v.shape[0] for v in value.values() if v.ndim} if stacked else set()
    if stacked and (len(lead) != 1 or any(v.ndim == 0 for v in value.values())):
        raise ValueError(f"every leaf of stacked params must share one leading axis (m, ...); got sizes {sorted(lead)}")
    for key, shape in shapes.items():
        got = tuple(value[key].shape[1:] if stacked else value[key].shape)
        if got != tuple(shape):
            raise ValueError(f"params {key!r} has shape {got}; this model's is {tuple(shape)}")


def param_shapes(shapes: dict[str, tuple[int, ...]], value: dict, need: Any = None) -> None:
    """The params a spec method is given must be the spec's: each of its keys that they hold with its
    shape (an encoder's half alone is fine for encode), and every key ``need(key)`` says the method reads.
    Without ``need``, a part the params hold (the encoder, the decoder, ...) must be whole: a missing
    layer would make a shallower network. Shapes only: no host sync, so the spec methods stay usable under torch.compile
    and vmap."""
    parts = {k.partition(".")[0] for k in value}
    reads = need if need is not None else (lambda k: k.partition(".")[0] in parts)
    missing = [k for k in shapes if k not in value and reads(k)]
    if missing:
        raise ValueError(f"params is missing {missing[:3]}{' and more' if len(missing) > 3 else ''} of this "
                         f"model's {sorted({k.partition('.')[0] for k in missing})}, which it reads here (params "
                         "of another model, or a key dropped?)")  # fmt: skip
    dtypes = set()
    for key, shape in shapes.items():
        v = value.get(key)
        if key in value and not isinstance(v, torch.Tensor):
            raise TypeError(f"params {key!r} must be a tensor; got {type(v).__name__}")
        if isinstance(v, torch.Tensor):
            dtypes.add(v.dtype)
            if not v.is_floating_point():
                raise TypeError(f"params {key!r} must be a floating-point tensor; got {v.dtype}")
        if len(dtypes) > 1:
            raise TypeError(f"params must share one dtype; got {sorted(map(str, dtypes))} (at {key!r})")
        if isinstance(v, torch.Tensor) and tuple(v.shape) != shape:
            raise ValueError(f"params {key!r} must have shape {shape} for this model; got {tuple(v.shape)} "
                             "(params of another model?)")  # fmt: skip


def label_range(value: Any, n_classes: int, name: str = "labels") -> None:
    """Int labels in [0, n_classes) where their values can be read (an out-of-range label would encode
    as an all-zero one-hot row); one host sync per call, standing aside under transforms."""
    if isinstance(value, torch.Tensor) and not value.is_floating_point() and value.dtype != torch.bool \
            and value.numel() and value.device.type != "meta" and readable(value):  # fmt: skip
        if value.dtype in (torch.uint16, torch.uint32, torch.uint64):  # no min/max kernels: as int64 (a huge one
            value = value.to(torch.int64)  # wraps negative, out of range all the same)
        lo, hi = int(value.min()), int(value.max())
        if lo < 0 or hi >= n_classes:
            raise ValueError(f"{name} must lie in [0, {n_classes}); got values in [{lo}, {hi}]")


def labels(value: Any, n: int, n_classes: int, *, device=None, name: str = "labels",
           unlabelled: bool = False) -> torch.Tensor:  # fmt: skip
    """A conditional model's labels for n examples: an int for all, ints (n,) in [0, n_classes), or
    one-hot rows (n, n_classes); returned as a tensor (ints, or the float rows as given).

    Host-side validation for the public functions (not for use inside a step).
    """
    if n_classes == 0:
        raise ValueError(f"these params are unconditional (n_classes=0); got {name}")
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = torch.full((n,), int(value), dtype=torch.int64)
    elif isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{name} must be ints (n,) or one-hot rows (n, {n_classes}); "
                            f"got {type(value).__name__}") from err  # fmt: skip
    if value.dtype == torch.bool or value.is_complex():
        raise TypeError(f"{name} must be integer class indices or float one-hot rows; got dtype {value.dtype}")
    if value.is_floating_point():
        _one_hot_rows(value, n, n_classes, name)
    else:
        if value.shape != (n,):
            raise ValueError(f"integer {name} must have shape ({n},); got {tuple(value.shape)}")
        if value.dtype in (torch.uint16, torch.uint32, torch.uint64):  # numpy's uint64: as int64, which torch
            value = value.to(torch.int64)  # can reduce and promote (a huge one wraps negative: refused below)
        low = -1 if unlabelled else 0
        if n and (int(value.min()) < low or int(value.max()) >= n_classes):
            what = f"[0, {n_classes}) (or -1 for an unlabelled example)" if unlabelled else f"[0, {n_classes})"
            raise ValueError(f"{name} must lie in {what}; "
                             f"got values in [{int(value.min())}, {int(value.max())}]")  # fmt: skip
    return value.to(device) if device is not None else value


def _one_hot_rows(value: torch.Tensor, n: int, n_classes: int, name: str) -> None:
    if value.shape != (n, n_classes):
        raise ValueError(f"one-hot {name} must have shape ({n}, {n_classes}); got {tuple(value.shape)}")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"one-hot {name} must be finite; got NaN or inf")
    if n and not bool((((value == 0) | (value == 1)).all(-1) & (value.sum(-1) == 1)).all()):
        raise ValueError(f"one-hot {name} must be rows of 0s with a single 1; got fractional or multi-hot rows")


def params_dict(value: Any, name: str = "params") -> None:
    """A non-empty dict (a type check only), before anything reads the params' values."""
    if not isinstance(value, dict) or not value:
        got = "an empty dict" if isinstance(value, dict) else type(value).__name__
        raise TypeError(f"{name} must be a non-empty dict of tensors (from vaefunc.init); got {got}")


def param_dict(value: Any) -> None:
    """``value`` must look like VAE params: a dict of str -> tensors with the first layers' keys, of one
    floating-point dtype on one device (the layer shapes are :func:`vaefunc.layout.architecture`'s to check)."""
    _tensor_dict(value, required=["encoder.0.weight", "encoder.0.bias", "decoder.0.weight", "decoder.0.bias"])


def _tensor_dict(value: Any, *, required: list[str]) -> None:
    """A dict of str -> tensors holding ``required``, of one floating-point dtype on one device."""
    if not isinstance(value, dict):
        raise TypeError(f"params must be a dict of tensors (from vaefunc.init); got {type(value).__name__}")
    for key, v in value.items():
        if not isinstance(key, str) or not isinstance(v, torch.Tensor):
            raise TypeError(
                f"params must map str keys to tensors; got {type(key).__name__} -> {type(v).__name__} at {key!r}"
            )
    for key in required:
        if key not in value:
            raise ValueError(f"params is missing {key!r}; expected the keys vaefunc.init makes, got {sorted(value)}")
    dtypes, devices = {v.dtype for v in value.values()}, {v.device for v in value.values()}
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
        raise TypeError(f"params must all share one floating-point dtype; got {sorted(map(str, dtypes))}")
    if len(devices) != 1:
        raise ValueError(f"params must all be on one device; got {sorted(map(str, devices))}")


def opt_state(params_value: dict, state: Any, where: str = "opt_state", error: type = ValueError) -> None:
    """Every dict in an optimizer state with the params' keys must have their shapes (a foreign
    state would make the fused kernels read and write out of bounds)."""
    shapes = {k: tuple(v.shape) for k, v in params_value.items()}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if set(node) & set(shapes) and set(node) != set(shapes):
                raise error(f"{where}: the optimizer state's keys {sorted(node)} are not the params' {sorted(shapes)}")
            if set(node) == set(shapes):
                for k, v in node.items():
                    if not isinstance(v, torch.Tensor) or tuple(v.shape) != shapes[k]:
                        got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                        raise error(f"{where}: optimizer state {k!r} is {got}; the param is {shapes[k]}")
            else:
                for v in node.values():
                    walk(v)
        elif isinstance(node, (tuple, list)):
            for v in node:
                walk(v)

    walk(state)


def finite_tree(name: str, tree: Any, hint: str = "") -> None:
    """Every floating-point tensor of a tree (dicts, tuples, lists) finite: one host sync for all of them,
    once per call (e.g. before a run's first step)."""
    leaves: list[tuple[str, torch.Tensor]] = []

    def walk(node: Any, key: str) -> None:
        if isinstance(node, torch.Tensor):
            if node.is_floating_point() and node.numel():
                leaves.append((key, node))
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(node, (tuple, list)):
            for i, v in enumerate(node):
                walk(v, f"{key}.{getattr(node, '_fields', range(len(node)))[i]}" if key else str(i))

    walk(tree, "")
    if not leaves:
        return
    by_device: dict[torch.device, list[int]] = {}
    for i, (_, t) in enumerate(leaves):
        by_device.setdefault(t.device, []).append(i)
    ok = [True] * len(leaves)
    for idx in by_device.values():  # x * 0 is 0 where finite, NaN where not: the norm cannot overflow
        norms = torch._foreach_norm(torch._foreach_mul([leaves[i][1] for i in idx], 0.0))
        for i, flag in zip(idx, torch.isfinite(torch.stack(norms)).tolist()):
            ok[i] = flag
    bad = [key for (key, _), flag in zip(leaves, ok) if not flag]
    if bad:
        raise ValueError(f"{name} must be finite; got NaN or inf in {bad[0]!r}"
                         f"{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}{hint}")  # fmt: skip


def train_position(where: str, epoch: Any, step: Any, rng: Any, sums: Any, streams: Sequence[str],
                   error: type = ValueError) -> None:  # fmt: skip
    """A TrainState's position as save writes it and load reads it: epoch an int in [0, MAX_EPOCHS],
    step an int >= 0, rng a uint8 generator state per stream, sums a floating-point tensor (..., 4)."""
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= MAX_EPOCHS:
        raise error(f"{where}: epoch must be an int in [0, {MAX_EPOCHS}]; got {epoch!r}")
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= 2**62:
        raise error(f"{where}: step must be an int >= 0; got {step!r}")
    if not isinstance(rng, dict) or set(rng) != set(streams):
        got = sorted(rng) if isinstance(rng, dict) else type(rng).__name__
        raise error(f"{where}: rng must hold the generator states {sorted(streams)}; got {got}")
    for name, v in rng.items():
        if not isinstance(v, torch.Tensor) or v.dtype != torch.uint8 or v.ndim not in (1, 2):
            got = f"{v.dtype} {tuple(v.shape)}" if isinstance(v, torch.Tensor) else type(v).__name__
            raise error(f"{where}: rng[{name!r}] must be a uint8 generator state; got {got}")
    if not isinstance(sums, torch.Tensor) or not sums.is_floating_point() or sums.ndim not in (1, 2) \
            or sums.shape[-1] != 4:  # fmt: skip
        got = f"{sums.dtype} {tuple(sums.shape)}" if isinstance(sums, torch.Tensor) else repr(sums)
        raise error(f"{where}: sums must be a floating-point tensor (4,) or (m, 4); got {got}")


def readable(value: torch.Tensor) -> bool:
    """Whether ``value``'s numbers can be read on the host here: not inside torch.compile, and not a
    tensor that vmap or grad wrap (the value checks then stand aside, as they must under transforms)."""
    return not torch.compiler.is_compiling() and not torch._C._functorch.is_functorch_wrapped_tensor(value)
