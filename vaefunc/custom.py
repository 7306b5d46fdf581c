"""A researcher's own encoder, decoder or classifier, as a pure function of params.

:class:`Network` wraps a ``torch.nn.Module`` (run through
``torch.func.functional_call``) or a pure ``apply(params, *inputs)`` function
with its initial params. A :class:`vaefunc.VAE` built by :meth:`vaefunc.VAE.custom`
holds one per network; the params stay a flat dict whose keys are the
module's own ``state_dict`` keys under ``"encoder."``, ``"decoder."`` and
``"classifier."``, so ``grad``, ``vmap`` (ensembles of custom models) and
``torch.compile`` apply unchanged.

The contract (what vaefunc passes and expects; b is any number of examples):

- encoder: ``encoder(x)`` with x (b, *input_shape) (the data's shape: flat
  (b, d) for ``input_shape=(d,)``, images (b, c, h, w)) returns mu and logvar
  of q(z|x): one tensor (b, 2z), mu first, or a pair ((b, z), (b, z)).
- decoder: ``decoder(z)`` with z (b, z) returns the likelihood's parameter
  (logits, or the Gaussian mean): (b, d) or (b, *input_shape).
- conditional models (``n_classes=n``) pass the label as a second argument,
  one-hot (b, n): ``encoder(x, y)``, ``decoder(z, y)`` (the built-in networks
  append it to their inputs; a custom one may use it as it likes).
- classifier (a semi-supervised model's q(y|x)): ``classifier(x)`` returns
  logits (b, n).

vaefunc evaluates its bounds one example at a time under ``vmap``, so a
network is called on batches of any size, and the examples of a batch must
not interact: batch normalization (whose statistics mix the examples) and
buffers (state that vaefunc's params do not carry and no step updates) are
refused with an error naming the module; so is dropout that is active
(vaefunc passes all randomness in explicitly: call ``module.eval()``).

Axis letters: b batch, d data features, z latent, n classes.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, cast

import torch
from torch import Tensor, nn

from ._types import Params

PREFIXES = ("encoder", "decoder", "classifier")


class Network:
    """One network of a custom VAE: ``apply(params, *inputs) -> output``, its param shapes and its init.

    Hashed and compared by the identity of what it was made from (the module,
    or the function and its params), so a spec holding it stays hashable and
    two specs built from the same module objects are equal.

    Args:
        apply: ``apply(params, *inputs)``, params keyed without the network's prefix.
        init: ``init(seed) -> Params``, fresh params for a seed.
        shapes: every param key (without the prefix) and its shape.
        name: what errors and a checkpoint call it, e.g. ``"ResidualEncoder"``.
        source: the objects it was made from (default: ``apply`` and ``init``).
    """

    def __init__(self, apply: Callable[..., Any], init: Callable[[int], Params], shapes: dict[str, tuple[int, ...]],
                 name: str, source: tuple[Any, ...] | None = None):  # fmt: skip
        self.apply, self.init, self.shapes, self.name = apply, init, dict(shapes), name
        self.source = (apply, init) if source is None else source

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Network) and len(self.source) == len(other.source) and all(
            a is b for a, b in zip(self.source, other.source))  # fmt: skip

    def __hash__(self) -> int:
        return hash(tuple(id(s) for s in self.source))

    def __repr__(self) -> str:
        return f"Network({self.name}, {len(self.shapes)} tensors)"


def as_network(role: str, net: Any) -> Network:
    """A module, an ``(apply, params)`` / ``(apply, init)`` pair or a :class:`Network`, as a Network.

    Raises:
        TypeError: for anything else; ValueError: a module with no parameters,
            with buffers, batch normalization or active dropout (named).
    """
    if isinstance(net, Network):
        return net
    if isinstance(net, nn.Module):
        return from_module(role, net)
    if isinstance(net, tuple) and len(net) == 2 and callable(net[0]):
        return from_function(role, *net)
    raise TypeError(f"{role} must be a torch.nn.Module or a pair (apply, params) of a pure function "
                    f"apply(params, *inputs) and its initial params (or init(seed) -> params); "
                    f"got {type(net).__name__}")  # fmt: skip


def from_module(role: str, module: nn.Module) -> Network:
    """A Network running ``module`` with ``functional_call`` on vaefunc's params."""
    name = f"the {role} {type(module).__name__}"
    _check_module(name, module)
    shapes = {k: tuple(p.shape) for k, p in module.named_parameters()}

    def apply(params: Params, *inputs: Tensor) -> Tensor:
        # The keys were checked against the module once (VAE.custom's probe, VAE.check): no per-call check.
        # Tied weights (one parameter under two names) are kept tied, as named_parameters lists them once.
        return torch.func.functional_call(module, params, inputs, strict=False)

    def init(seed: int) -> Params:
        """The module's params drawn afresh: every submodule's ``reset_parameters()`` from ``seed``
        (a parameter of a module without one keeps the value it was built with)."""
        fresh = copy.deepcopy(module)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for sub in fresh.modules():
                if callable(reset := getattr(sub, "reset_parameters", None)):
                    reset()
        return {k: p.detach().clone() for k, p in fresh.named_parameters()}

    return Network(apply, init, shapes, type(module).__name__, source=(module,))


def from_function(role: str, apply: Callable[..., Any], params_or_init: Any) -> Network:
    """A Network from a pure ``apply(params, *inputs)`` and its initial params (the same for every
    seed) or ``init(seed) -> params``."""
    name = getattr(apply, "__name__", type(apply).__name__)
    source = (apply, params_or_init)
    if callable(params_or_init):
        init = params_or_init
        shapes = _shapes(f"the {role} {name}'s init(0)", init(0))
    else:
        first = _shapes(f"the {role} {name}'s params", params_or_init)
        given = {k: v.detach().clone() for k, v in params_or_init.items()}
        init, shapes = (lambda seed: {k: v.clone() for k, v in given.items()}), first
    return Network(apply, init, shapes, name, source=source)


def _shapes(name: str, params: Any) -> dict[str, tuple[int, ...]]:
    if not isinstance(params, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in params.items()):
        raise TypeError(f"{name} must be a dict of str keys to tensors; got {type(params).__name__}")
    if not params:
        raise ValueError(f"{name} is empty: a network needs parameters to train")
    bad = [k for k, v in params.items() if not v.is_floating_point()]
    if bad:
        raise TypeError(f"{name} must be floating point; got {params[bad[0]].dtype} for {bad[0]!r}")
    return {k: tuple(v.shape) for k, v in params.items()}


def _check_module(name: str, module: nn.Module) -> None:
    """Refuse what a pure, per-example functional call cannot run faithfully."""
    params = dict(module.named_parameters())
    if not params:
        raise ValueError(f"{name} has no parameters: a network needs parameters to train")
    bad = [k for k, p in params.items() if not p.is_floating_point()]
    if bad:
        raise TypeError(f"{name}'s parameters must be floating point; got {params[bad[0]].dtype} for {bad[0]!r}")
    for sub_name, sub in module.named_modules():
        where = f"{name} (its submodule {sub_name!r}, {type(sub).__name__})" if sub_name else name
        if isinstance(sub, nn.modules.batchnorm._NormBase) and not isinstance(sub, nn.modules.instancenorm._InstanceNorm):
            raise ValueError(f"{where} is a batch normalization: its statistics mix the examples of a batch, which "
                             "vaefunc's per-example bounds do not allow; use nn.GroupNorm or nn.LayerNorm")  # fmt: skip
        if isinstance(sub, nn.modules.dropout._DropoutNd) and sub.training and sub.p > 0:
            raise ValueError(f"{where} is an active dropout: vaefunc passes every random draw in explicitly; "
                             "call module.eval() (or drop it)")  # fmt: skip
    buffers = [k for k, _ in module.named_buffers()]
    if buffers:
        raise ValueError(f"{name} has buffers {buffers[:3]}: vaefunc's params are a model's whole state and no step "
                         "updates a buffer; make them parameters, constants, or computed in forward")  # fmt: skip


def prefixed(prefix: str, params: Params) -> Params:
    """{"0.weight": w} -> {"encoder.0.weight": w}."""
    return {f"{prefix}.{k}": v for k, v in params.items()}


def own(prefix: str, params: Params, shapes: dict[str, tuple[int, ...]]) -> Params:
    """The params of one network, its prefix removed: params["encoder.0.weight"] -> {"0.weight": ...}."""
    return {k: params[f"{prefix}.{k}"] for k in shapes}


def call(net: Network | None, prefix: str, params: Params, x: Tensor, labels: Tensor | None) -> Any:
    """Run a network on one batch x (b, ...), with the one-hot labels (b, n) for a conditional model."""
    if net is None:
        raise ValueError(f"the model has no {prefix} network to run")
    inputs = (x,) if labels is None else (x, labels)
    return net.apply(own(prefix, params, net.shapes), *inputs)


def probe(model: Any) -> None:
    """Run a custom model's networks once on a batch of two zero examples (float32, CPU) and check what
    they return against the contract of :mod:`vaefunc.custom`: a ValueError/TypeError naming the network."""
    params = model.init(seed=0)
    b, z, n, decoder = 2, model.latent_dim, model.n_classes, cast(Network, model.decoder)
    y = torch.zeros(b, dtype=torch.int64) if n else None
    x = torch.zeros(b, *model.input_shape)
    with torch.no_grad():
        enc = _run(model.encoder, "encoder", params, x, y, n)
        _check_encoder_output(cast(Network, model.encoder).name, enc, b, z)
        dec = _run(model.decoder, "decoder", params, torch.zeros(b, z), y, n)
        _check_output(f"the decoder {decoder.name}", dec, [(b, model.data_dim), (b, *model.input_shape)])
        if model.classifier is not None:
            logits = _run(model.classifier, "classifier", params, x, None, 0)
            _check_output(f"the classifier {model.classifier.name}", logits, [(b, n)])


def _run(net, role: str, params: Params, inp: Tensor, y: Tensor | None, n: int):
    args = "(x)" if y is None else "(x, y)"
    try:
        return call(net, role, params, inp, None if y is None else torch.nn.functional.one_hot(y, n).to(inp.dtype))
    except Exception as e:  # noqa: BLE001  (the user's code: any error is reported with what was passed)
        raise ValueError(f"the {role} {net.name} failed when called as {role}{args} with "
                         f"{role == 'decoder' and 'z' or 'x'} of shape {tuple(inp.shape)}"
                         f"{'' if y is None else f' and one-hot y of shape ({inp.shape[0]}, {n})'}: "
                         f"{type(e).__name__}: {e}") from e  # fmt: skip


def _check_encoder_output(name: str, out, b: int, z: int) -> None:
    if isinstance(out, tuple):
        if len(out) != 2:
            raise ValueError(f"the encoder {name} must return (b, 2z) or a pair (mu, logvar); got {len(out)} outputs")
        for part, value in zip(("mu", "logvar"), out):
            _check_output(f"the encoder {name}'s {part}", value, [(b, z)])
        return
    _check_output(f"the encoder {name}", out, [(b, 2 * z)], note=" (mu and logvar, or return the pair)")


def _check_output(name: str, out, shapes: list[tuple[int, ...]], note: str = "") -> None:
    want = " or ".join(str(s) for s in shapes)
    if not isinstance(out, Tensor):
        raise TypeError(f"{name} must return a tensor of shape {want}{note}; got {type(out).__name__}")
    if out.dtype != torch.float32:
        raise TypeError(f"{name} must return the dtype of its input (float32 here); got {out.dtype}")
    if tuple(out.shape) not in shapes:
        raise ValueError(f"{name} must return shape {want} for a batch of 2{note}; got {tuple(out.shape)}")
