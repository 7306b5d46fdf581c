"""Bridges to ``torch.nn``: the same VAE as an ``nn.Module``, and back.

The param dict already has ``state_dict`` keys and layouts, so the bridge is
a module whose ``encoder`` and ``decoder`` are ``nn.Sequential(Linear, Act,
..., Linear)`` of the params' widths, ``Act`` the module of the hidden
activation (``nn.ReLU()`` by default, ``nn.Tanh()`` for ``activation="tanh"``,
...), and whose methods compute exactly what :func:`vaefunc.encode`,
:func:`vaefunc.decode` and the reparameterized pass do with that activation.

Axis letters: b batch, d data features, z latent.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ._types import Params
from .network import LOGVAR_MAX, LOGVAR_MIN, flatten
from .nn import check_activation, mlp_layers
from ._resolve import resolve
from .spec import VAE
from .state import check_params


# The nn.Module of each activation name, in the default form its functional twin in vaefunc.nn uses.
_MODULES: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "softplus": nn.Softplus,
                                        "gelu": nn.GELU, "silu": nn.SiLU}  # fmt: skip


class VAEModule(nn.Module):
    """The VAE of a param dict as an ``nn.Module`` (build it with :func:`to_module`)."""

    def __init__(self, encoder_sizes: list[int], decoder_sizes: list[int], activation: str = "relu"):
        super().__init__()
        check_activation(activation)
        self.activation = activation  # the name, as the functional model takes it
        self.encoder = _sequential(encoder_sizes, activation)
        self.decoder = _sequential(decoder_sizes, activation)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (b, *input_shape) or (b, d) -> mu, logvar: (b, z), logvar clamped as in :func:`vaefunc.encode`."""
        h = self.encoder(flatten(x, self.encoder[0].in_features))  # type: ignore[arg-type]  # Sequential[0] types as Module
        mu, logvar = h.chunk(2, dim=-1)
        return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def decode(self, z: Tensor) -> Tensor:
        """z: (b, z) -> (b, d): Bernoulli logits or the Gaussian mean."""
        return self.decoder(z)

    def forward(self, x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The reparameterized pass: returns decode(mu + exp(logvar / 2) * eps), mu, logvar.

        Args:
            x: (b, *input_shape) or (b, d).
            eps: (b, z), eps ~ N(0, I), drawn by the caller as everywhere in vaefunc.
        """
        mu, logvar = self.encode(x)
        return self.decode(VAE.reparameterize(mu, logvar, eps)), mu, logvar


def _sequential(sizes: list[int], activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(_MODULES[activation]())
        layers.append(nn.Linear(d_in, d_out))
    return nn.Sequential(*layers)


def to_module(params: Params, *, activation: str = "relu", model: VAE | None = None) -> VAEModule:
    """An ``nn.Module`` with the same forward as the functional model, holding a copy of ``params``.

    Args:
        params: from ``model.init`` or training; not modified and not shared
            (the module owns copies, on the params' device and dtype).
        activation: the hidden activation the params were trained with, or
        model: their :class:`vaefunc.VAE` spec. The module holds the activation's
            ``nn`` module (``"tanh"``: ``nn.Tanh()``) between the linear layers.

    Returns:
        :class:`VAEModule` with ``encode``, ``decode`` and ``forward(x, eps)``;
        its ``state_dict()`` has exactly the params' keys.

    Example:
        >>> module = vaefunc.to_module(vaefunc.init((784,), latent_dim=20, hidden=(400,)))
        >>> mu, logvar = module.encode(torch.rand(8, 784))
        >>> vaefunc.to_module(params, model=vaefunc.VAE((784,), activation="tanh")).encoder[1]
        Tanh()
    """
    check_params(params)
    model = resolve(params, model, activation=activation)
    model.check(params)
    if model.arch != "mlp" or model.n_classes or model.top_latent_dim or model.flow_steps:
        kind = (model.arch if model.arch != "mlp" else f"conditional ({model.n_classes} classes)" if model.n_classes
                else "two-stochastic-layer" if model.top_latent_dim else "IAF-posterior")  # fmt: skip
        raise ValueError(f"to_module builds unconditional MLP VAEs only; got {kind} params (it builds one Gaussian "
                         "stochastic layer)")  # fmt: skip
    extra = sorted(set(params) - set(model.layout.shapes))
    if extra:
        raise ValueError(f"to_module builds the encoder and decoder only; these params also hold {extra}")
    sizes = {}
    for prefix in ("encoder", "decoder"):
        layers = mlp_layers(params, prefix)
        sizes[prefix] = [layers[0]["weight"].shape[1]] + [layer["weight"].shape[0] for layer in layers]
    first = next(iter(params.values()))
    with torch.device("meta"):
        module = VAEModule(sizes["encoder"], sizes["decoder"], model.activation)
    module = module.to_empty(device=first.device).to(first.dtype)
    module.load_state_dict({k: v.detach() for k, v in params.items()}, strict=True)
    return module


def from_state_dict(state_dict: Mapping[str, Tensor]) -> Params:
    """A param dict from an ``nn.Module``'s state dict (e.g. ``to_module(params).state_dict()``).

    Args:
        state_dict: keys ``encoder.0.weight``, ... as :func:`vaefunc.init` makes them.

    Returns:
        A new dict of detached copies, checked like any params.

    Raises:
        TypeError, ValueError: missing keys, non-tensor values, mismatched shapes.

    Example:
        >>> params = vaefunc.from_state_dict(module.state_dict())
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of str to tensors; got {type(state_dict).__name__}")
    params = dict(state_dict)
    check_params(params)
    return {k: v.detach().clone() for k, v in params.items()}
