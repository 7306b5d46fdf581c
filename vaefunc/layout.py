"""Reading a model's layout from a param dict's keys and shapes alone.

A param dict holds the state dict of an ``encoder`` and a ``decoder``
``nn.Sequential`` (see :mod:`vaefunc.network`); :func:`architecture` reads back
what it can from the keys and shapes: the architecture, the input shape, the
latent size, the number of classes and the layers in order. What a param
dict cannot record (the hidden activation, the likelihood) comes from a
:class:`vaefunc.VAE` spec; :meth:`vaefunc.VAE.from_params` starts from here.

Axis letters: d data features, z latent, n classes, c channels.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from ._types import Params
from .nn import sequential_layers

Layers = list[tuple[int, Params]]
"""(sequential index, {"weight", "bias"}) pairs, in order."""


class Architecture(NamedTuple):
    """What a param dict describes, read from its keys and shapes alone."""

    arch: str  # "mlp" or "conv"
    input_shape: tuple[int, ...]  # (d,) for mlp, (c, h, w) for conv
    latent_dim: int  # z
    n_classes: int  # 0 for an unconditional VAE
    enc_conv: list[Params]  # the encoder's convolutions, in order (empty for mlp)
    enc_dense: list[Params]  # the encoder's linear layers, in order
    dec_dense: list[Params]  # the decoder's linear layers, in order
    dec_conv: list[Params]  # the decoder's transposed convolutions, in order (empty for mlp)
    feature_shape: tuple[int, ...]  # (c_L, s, s): the image shape at the bottleneck (empty for mlp)


def architecture(params: Params) -> Architecture:
    """Read the architecture, input shape, z and n_classes from the keys and shapes.

    Params holding only the encoder's layers (or only the decoder's) are read
    as unconditional, so :func:`vaefunc.encode` (or :func:`vaefunc.decode`)
    works on that half.

    Example:
        >>> a = architecture(vaefunc.init((1, 28, 28), latent_dim=8, arch="conv", n_classes=10))
        >>> a.arch, a.input_shape, a.latent_dim, a.n_classes, a.feature_shape
        ('conv', (1, 28, 28), 8, 10, (32, 7, 7))

    Raises:
        ValueError: naming the layer whose shape does not fit, or the missing layers.
    """
    enc, dec = _checked_layers(params, "encoder"), _checked_layers(params, "decoder")
    if not enc and not dec:
        raise ValueError(f"params must hold encoder.* and decoder.* layers (from vaefunc.init); got {sorted(params)}")
    enc_conv, enc_dense = _split(enc, conv_first=True)
    dec_dense, dec_conv = _split(dec, conv_first=False)
    if (enc and not enc_dense) or (dec and not dec_dense):
        raise ValueError("the encoder must end, and the decoder begin, with a linear layer; got none")
    if enc and dec and bool(enc_conv) != bool(dec_conv):
        raise ValueError(
            f"a conv encoder needs a conv decoder and vice versa; got {len(enc_conv)} encoder and "
            f"{len(dec_conv)} decoder convolutions"
        )
    _check_chain("encoder", enc_conv, transpose=False)
    _check_chain("encoder", enc_dense, transpose=False)
    _check_chain("decoder", dec_dense, transpose=False)
    _check_chain("decoder", dec_conv, transpose=True)
    if not enc or not dec:
        return _half_architecture(enc_conv, enc_dense, dec_dense, dec_conv)
    return _full_architecture(enc_conv, enc_dense, dec_dense, dec_conv)


def _checked_layers(params: Params, prefix: str) -> Layers:
    """The layers of one half, each a linear (out, in) or conv (out, in, k, k) weight with its bias."""
    layers = sequential_layers(params, prefix)
    for i, layer in layers:
        w, b = layer["weight"], layer["bias"]
        out = w.shape[1] if (prefix == "decoder" and w.ndim == 4) else w.shape[0]
        if w.ndim not in (2, 4) or b.shape != (out,):
            raise ValueError(
                f"{prefix}.{i}: expected a linear (out, in) or conv (out, in, k, k) weight and a bias (out,); "
                f"got weight {tuple(w.shape)} and bias {tuple(b.shape)}"
            )
        if w.ndim == 4 and (w.shape[2] != w.shape[3] or w.shape[2] % 2):
            raise ValueError(f"{prefix}.{i}: expected a square, even conv kernel (k, k); got {tuple(w.shape[2:])}")
    return layers


def _split(layers: Layers, *, conv_first: bool) -> tuple[Layers, Layers]:
    """(convolutions, linear layers) of the encoder, or (linear layers, convolutions) of the decoder."""
    first_ndim = 4 if conv_first else 2
    cut = next((j for j, (_, layer) in enumerate(layers) if layer["weight"].ndim != first_ndim), len(layers))
    head, tail = layers[:cut], layers[cut:]
    prefix, ndim, where = ("encoder", 2, "after the convolutions") if conv_first else ("decoder", 4,
                                                                                       "after the linear layers")  # fmt: skip
    for i, layer in tail:
        if layer["weight"].ndim != ndim:
            raise ValueError(f"{prefix}.{i}: expected a {'linear' if ndim == 2 else 'conv'} layer {where}; "
                             f"got weight {tuple(layer['weight'].shape)}")  # fmt: skip
    return head, tail


def _strip(layers: Layers) -> list[Params]:
    return [layer for _, layer in layers]


def _full_architecture(enc_conv: Layers, enc_dense: Layers, dec_dense: Layers, dec_conv: Layers) -> Architecture:
    """The architecture of params that hold both halves."""
    two_z = enc_dense[-1][1]["weight"].shape[0]
    if two_z % 2:
        dec_in = dec_dense[0][1]["weight"].shape[1]
        raise ValueError(f"the encoder must output 2 * latent_dim = {2 * dec_in} values (mu, logvar); got {two_z}")
    z = two_z // 2
    n = dec_dense[0][1]["weight"].shape[1] - z
    if n < 0:
        raise ValueError(f"the decoder must read latent_dim = {z} values (plus the label); got {z + n}")
    enc_in, dec_out = enc_dense[0][1]["weight"].shape[1] - n, dec_dense[-1][1]["weight"].shape[0]
    if not enc_conv:
        if enc_in != dec_out:
            raise ValueError(f"the decoder must output the {enc_in} features the encoder reads; got {dec_out}")
        return Architecture("mlp", (enc_in,), z, n, [], _strip(enc_dense), _strip(dec_dense), [], ())
    c, c_last = enc_conv[0][1]["weight"].shape[1], enc_conv[-1][1]["weight"].shape[0]
    s = math.isqrt(enc_in // c_last)
    if c_last * s * s != enc_in:
        raise ValueError(
            f"encoder.{enc_dense[0][0]}: expected c_L * s * s (+ n_classes) inputs for a square "
            f"({c_last}, s, s) feature map; got {enc_in + n}"
        )
    if dec_out != enc_in or dec_conv[0][1]["weight"].shape[0] != c_last or len(dec_conv) != len(enc_conv):
        raise ValueError(
            f"the conv decoder must mirror the encoder: {enc_in} features into {c_last} channels and "
            f"{len(enc_conv)} transposed convolutions; got {dec_out} features into "
            f"{dec_conv[0][1]['weight'].shape[0]} channels and {len(dec_conv)}"
        )
    if dec_conv[-1][1]["weight"].shape[1] != c:
        got = dec_conv[-1][1]["weight"].shape[1]
        raise ValueError(f"the decoder must output the {c} channels the encoder reads; got {got}")
    size = s * 2 ** len(enc_conv)
    layers = (_strip(enc_conv), _strip(enc_dense), _strip(dec_dense), _strip(dec_conv))
    return Architecture("conv", (c, size, size), z, n, *layers, (c_last, s, s))


def _half_architecture(enc_conv: Layers, enc_dense: Layers, dec_dense: Layers, dec_conv: Layers) -> Architecture:
    """The architecture of params that hold only the encoder or only the decoder, read as unconditional."""
    if enc_dense:
        two_z = enc_dense[-1][1]["weight"].shape[0]
        if two_z % 2:
            raise ValueError(f"the encoder must output 2 * latent_dim values (mu, logvar); got {two_z}")
        z, flat = two_z // 2, enc_dense[0][1]["weight"].shape[1]
        c = enc_conv[0][1]["weight"].shape[1] if enc_conv else 0
        c_last, depth = (enc_conv[-1][1]["weight"].shape[0], len(enc_conv)) if enc_conv else (0, 0)
    else:
        z, flat = dec_dense[0][1]["weight"].shape[1], dec_dense[-1][1]["weight"].shape[0]
        c = dec_conv[-1][1]["weight"].shape[1] if dec_conv else 0
        c_last, depth = (dec_conv[0][1]["weight"].shape[0], len(dec_conv)) if dec_conv else (0, 0)
    layers = (_strip(enc_conv), _strip(enc_dense), _strip(dec_dense), _strip(dec_conv))
    if not depth:
        return Architecture("mlp", (flat,), z, 0, *layers, ())
    s = math.isqrt(flat // c_last)
    if c_last * s * s != flat:
        raise ValueError(f"expected c_L * s * s features for a square ({c_last}, s, s) feature map; got {flat}")
    size = s * 2**depth
    return Architecture("conv", (c, size, size), z, 0, *layers, (c_last, s, s))


def _check_chain(prefix: str, layers: Layers, *, transpose: bool) -> None:
    """Each layer must read as many inputs (channels) as the previous one outputs."""
    for (_, a), (j, b) in zip(layers[:-1], layers[1:]):
        w = b["weight"]
        width = a["weight"].shape[1] if transpose else a["weight"].shape[0]
        got = w.shape[0] if transpose else w.shape[1]
        if width != got:
            kernel = ", k, k" if w.ndim == 4 else ""
            layout = f"({width}, out{kernel})" if transpose else f"(out, {width}{kernel})"
            raise ValueError(
                f"{prefix}.{j}: expected weight {layout} and bias (out,); "
                f"got weight {tuple(w.shape)} and bias {tuple(b['bias'].shape)}"
            )


def conv_channels(a: Architecture) -> tuple[int, ...]:
    """The output channels of the encoder's convolutions, in order (empty for an MLP)."""
    return tuple(layer["weight"].shape[0] for layer in a.enc_conv)


def data_dim(params: Params) -> int:
    """d, the number of input features a param dict's encoder reads (c * h * w for images)."""
    return math.prod(architecture(params).input_shape)


def latent_dim(params: Params) -> int:
    """z, the number of latent dimensions a param dict's encoder returns."""
    return architecture(params).latent_dim
