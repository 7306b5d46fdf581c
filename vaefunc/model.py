"""The VAE as pure functions of a flat param dict.

Two architectures share one key layout, the state dict of an ``encoder`` and a
``decoder`` ``nn.Sequential``; which one a dict holds is read from its keys and
shapes alone (see :func:`architecture`).

MLP (``arch="mlp"``)::

    encoder = Sequential(Linear(d [+ n], h1), Act, ..., Linear(h_n, 2z))     # mu and logvar, stacked
    decoder = Sequential(Linear(z [+ n], h_n), Act, ..., Linear(h1, d))      # Bernoulli logits or Gaussian mean

Convolutional (``arch="conv"``, L stride-2 convolutions, kernel 4, padding 1)::

    encoder = Sequential(Conv2d(c, c1, 4, 2, 1), Act, ..., Conv2d(c_{L-1}, c_L, 4, 2, 1), Act,
                         Flatten, Linear(c_L*s*s [+ n], h1), Act, ..., Linear(h_n, 2z))
    decoder = Sequential(Linear(z [+ n], h_n), Act, ..., Linear(h1, c_L*s*s), Act, Unflatten(1, (c_L, s, s)),
                         ConvTranspose2d(c_L, c_{L-1}, 4, 2, 1), Act, ..., ConvTranspose2d(c1, c, 4, 2, 1))

with s = H / 2^L. A conditional VAE (``n_classes=n``) concatenates the one-hot
label to the encoder's input features (for conv: to the flattened convolution
features) and to z, so ``n`` is the decoder's extra input width.

``Act`` is the hidden activation, one for every hidden layer of both halves
(convolutions included): ReLU by default, or any of :data:`ACTIVATIONS`
(``"tanh"`` for the IWAE paper's setting). It has no params, so a param dict
does not record it (an ``nn.Sequential`` state dict does not either): it is a
keyword-only static option, ``activation=``, of every function that runs the
network, and a setting saved with a trained model (see :class:`vaefunc.TrainConfig`).

Axis letters: b batch, d data features (c*h*w for images), c channels,
h w image height and width, z latent, n classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from einops import pack, rearrange, unpack
from torch import Tensor

from ._types import Params
from .nn import ACTIVATIONS as ACTIVATIONS
from .nn import activation_fn, conv, conv_transpose, init_conv, init_mlp, linear, sequential_layers

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0
"""The encoder's log-variance is clamped here so exp(logvar) stays finite in float32."""

ARCHS = ("mlp", "conv")
CONV_CHANNELS = (32, 32, 64, 64)
"""Default channel widths of the conv encoder, one per stride-2 layer (the decoder mirrors them)."""
CONV_KERNEL = 4
CONV_MAX_LAYERS = 4
CONV_MIN_SIZE = 4
"""By default the conv encoder halves the image while it is even and at least 2 * CONV_MIN_SIZE wide."""


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


def init(
    input_shape: int | Sequence[int],
    *,
    latent_dim: int = 20,
    hidden: Sequence[int] = (400,),
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    arch: str = "mlp",
    channels: Sequence[int] | None = None,
    n_classes: int | None = None,
) -> Params:
    """Fresh VAE params, initialised as the equivalent ``nn.Linear``/``nn.Conv2d`` stack would be.

    Args:
        input_shape: shape of one example, e.g. ``(784,)`` or ``(1, 28, 28)``; the
            MLP sees it flattened to d features. ``arch="conv"`` needs (c, h, w)
            with h == w.
        latent_dim: z, the number of latent dimensions.
        hidden: widths of the encoder's hidden linear layers (for conv: after
            the convolutions); the decoder mirrors them. ``()`` gives a linear
            encoder and a linear decoder (for conv: one linear layer each).
        seed: seeds the one ``torch.Generator`` every weight is drawn from.
        arch: ``"mlp"`` or ``"conv"`` (layouts in the module docstring).
        channels: conv only: the channel widths of the stride-2 convolutions,
            one per layer; h must be divisible by 2^len(channels). Default: halve
            while h is even and h/2 >= 4, at most 4 layers, widths (32, 32, 64, 64)
            (so (1, 28, 28) -> 7x7x32 and (1, 64, 64) -> 4x4x64).
        n_classes: build a conditional VAE whose encoder and decoder also read a
            one-hot label of this many classes. ``None`` (or 0): unconditional.

    Returns:
        A dict of tensors with the keys in the module docstring.

    Example:
        >>> params = init((784,), latent_dim=20, hidden=(400,), seed=0)
        >>> params["encoder.0.weight"].shape
        torch.Size([400, 784])
        >>> params = init((1, 64, 64), latent_dim=10, arch="conv", n_classes=3)
        >>> params["encoder.0.weight"].shape, params["decoder.0.weight"].shape
        (torch.Size([32, 1, 4, 4]), torch.Size([400, 13]))
    """
    shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
    if not shape or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"input_shape must be positive ints, e.g. (784,); got {input_shape!r}")
    if not isinstance(latent_dim, int) or latent_dim < 1:
        raise ValueError(f"latent_dim must be a positive int; got {latent_dim!r}")
    hidden = tuple(hidden)
    if not all(isinstance(h, int) and h > 0 for h in hidden):
        raise ValueError(f"hidden must be a sequence of positive ints, e.g. (400,); got {hidden!r}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point dtype; got {dtype}")
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}; got {arch!r}")
    n = 0 if n_classes is None else n_classes
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n_classes must be a positive int or None; got {n_classes!r}")
    if channels is not None and arch != "conv":
        raise ValueError(f"channels is for arch='conv' only; got channels={channels!r} with arch={arch!r}")
    gen = torch.Generator(device=device or "cpu").manual_seed(seed)
    kw = {"dtype": dtype, "device": device}
    if arch == "mlp":
        d = math.prod(shape)
        params = init_mlp(gen, (d + n, *hidden, 2 * latent_dim), prefix="encoder", **kw)
        return params | init_mlp(gen, (latent_dim + n, *hidden[::-1], d), prefix="decoder", **kw)

    c, size, channels = _conv_layout(shape, channels)
    depth = len(channels)
    s = size // 2**depth
    flat = channels[-1] * s * s
    params: Params = {}
    for i, (c_in, c_out) in enumerate(zip((c, *channels[:-1]), channels)):
        layer = init_conv(gen, c_in, c_out, CONV_KERNEL, **kw)
        params |= {f"encoder.{2 * i}.{k}": v for k, v in layer.items()}
    # Flatten sits at index 2 * depth; the linear layers follow it.
    params |= init_mlp(gen, (flat + n, *hidden, 2 * latent_dim), prefix="encoder", start=2 * depth + 1, **kw)
    dense = (latent_dim + n, *hidden[::-1], flat)
    params |= init_mlp(gen, dense, prefix="decoder", **kw)
    start = 2 * (len(dense) - 1) + 1  # after the last linear's ReLU, Unflatten sits at 2 * (len(dense) - 1)
    widths = (*channels[::-1], c)
    for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
        layer = init_conv(gen, c_in, c_out, CONV_KERNEL, transpose=True, **kw)
        params |= {f"decoder.{start + 2 * i}.{k}": v for k, v in layer.items()}
    return params


def _conv_layout(shape: tuple[int, ...], channels: Sequence[int] | None) -> tuple[int, int, tuple[int, ...]]:
    """Check a conv input shape and pick the channel widths: (c, size, channels)."""
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(f"arch='conv' needs a square image input_shape (c, h, w) with h == w; got {shape}")
    c, size = shape[0], shape[1]
    if channels is None:
        depth, s = 0, size
        while depth < CONV_MAX_LAYERS and s % 2 == 0 and s // 2 >= CONV_MIN_SIZE:
            depth, s = depth + 1, s // 2
        if depth == 0:
            raise ValueError(f"arch='conv' needs an even image size of at least {2 * CONV_MIN_SIZE}; got {shape}")
        return c, size, CONV_CHANNELS[:depth]
    channels = tuple(channels)
    if not channels or not all(isinstance(w, int) and w > 0 for w in channels):
        raise ValueError(f"channels must be a non-empty sequence of positive ints, e.g. (32, 64); got {channels!r}")
    if size % 2 ** len(channels):
        raise ValueError(
            f"{len(channels)} stride-2 convolutions need an image size divisible by {2 ** len(channels)}; got {shape}"
        )
    return c, size, channels


def architecture(params: Params) -> Architecture:
    """Read the architecture, input shape, z and n_classes from the keys and shapes.

    Params holding only the encoder's layers (or only the decoder's) are read
    as unconditional, so :func:`encode` (or :func:`decode`) works on that half.

    Example:
        >>> a = architecture(init((1, 28, 28), latent_dim=8, arch="conv", n_classes=10))
        >>> a.arch, a.input_shape, a.latent_dim, a.n_classes, a.feature_shape
        ('conv', (1, 28, 28), 8, 10, (32, 7, 7))

    Raises:
        ValueError: naming the layer whose shape does not fit, or the missing layers.
    """
    enc, dec = sequential_layers(params, "encoder"), sequential_layers(params, "decoder")
    if not enc and not dec:
        raise ValueError(f"params must hold encoder.* and decoder.* layers (from vaefunc.init); got {sorted(params)}")
    for prefix, layers in (("encoder", enc), ("decoder", dec)):
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
    n_enc_conv = next((j for j, (_, l) in enumerate(enc) if l["weight"].ndim == 2), len(enc))
    n_dec_dense = next((j for j, (_, l) in enumerate(dec) if l["weight"].ndim == 4), len(dec))
    enc_conv, enc_dense = enc[:n_enc_conv], enc[n_enc_conv:]
    dec_dense, dec_conv = dec[:n_dec_dense], dec[n_dec_dense:]
    for prefix, layers, ndim, where in (
        ("encoder", enc_dense, 2, "after the convolutions"),
        ("decoder", dec_conv, 4, "after the linear layers"),
    ):
        for i, layer in layers:
            if layer["weight"].ndim != ndim:
                raise ValueError(f"{prefix}.{i}: expected a {'linear' if ndim == 2 else 'conv'} layer {where}; "
                                 f"got weight {tuple(layer['weight'].shape)}")  # fmt: skip
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
    two_z = enc_dense[-1][1]["weight"].shape[0]
    if two_z % 2:
        dec_in = dec_dense[0][1]["weight"].shape[1]
        raise ValueError(f"the encoder must output 2 * latent_dim = {2 * dec_in} values (mu, logvar); got {two_z}")
    z = two_z // 2
    n = dec_dense[0][1]["weight"].shape[1] - z
    if n < 0:
        raise ValueError(f"the decoder must read latent_dim = {z} values (plus the label); got {z + n}")
    enc_in, dec_out = enc_dense[0][1]["weight"].shape[1] - n, dec_dense[-1][1]["weight"].shape[0]
    strip = lambda layers: [layer for _, layer in layers]  # noqa: E731
    if not enc_conv:
        if enc_in != dec_out:
            raise ValueError(f"the decoder must output the {enc_in} features the encoder reads; got {dec_out}")
        return Architecture("mlp", (enc_in,), z, n, [], strip(enc_dense), strip(dec_dense), [], ())
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
    return Architecture(
        "conv", (c, size, size), z, n, strip(enc_conv), strip(enc_dense), strip(dec_dense), strip(dec_conv),
        (c_last, s, s),
    )  # fmt: skip


def _half_architecture(enc_conv, enc_dense, dec_dense, dec_conv) -> Architecture:
    """The architecture of params that hold only the encoder or only the decoder, read as unconditional."""
    strip = lambda layers: [layer for _, layer in layers]  # noqa: E731
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
    layers = (strip(enc_conv), strip(enc_dense), strip(dec_dense), strip(dec_conv))
    if not depth:
        return Architecture("mlp", (flat,), z, 0, *layers, ())
    s = math.isqrt(flat // c_last)
    if c_last * s * s != flat:
        raise ValueError(f"expected c_L * s * s features for a square ({c_last}, s, s) feature map; got {flat}")
    size = s * 2**depth
    return Architecture("conv", (c, size, size), z, 0, *layers, (c_last, s, s))


def _check_chain(prefix: str, layers: list[tuple[int, Params]], *, transpose: bool) -> None:
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


def input_shape(params: Params) -> tuple[int, ...]:
    """The shape of one example: (d,) for an MLP, (c, h, w) for a conv VAE."""
    return architecture(params).input_shape


def data_dim(params: Params) -> int:
    """d, the number of input features the encoder reads (c * h * w for images)."""
    return math.prod(architecture(params).input_shape)


def latent_dim(params: Params) -> int:
    """z, the number of latent dimensions."""
    return architecture(params).latent_dim


def n_classes(params: Params) -> int:
    """The number of label classes of a conditional VAE; 0 when it is unconditional."""
    return architecture(params).n_classes


def macs_per_example(params: Params) -> int:
    """Multiply-accumulates of one encoder and one decoder pass over one example.

    A linear layer costs its weight's size; a convolution its weight's size
    times the number of output pixels (a transposed one: of input pixels).
    """
    a = architecture(params)
    total = sum(layer["weight"].numel() for layer in a.enc_dense + a.dec_dense)
    if a.arch == "conv":
        size = a.input_shape[1]
        for layer in a.enc_conv:
            size //= 2
            total += layer["weight"].numel() * size * size
        for layer in a.dec_conv:
            total += layer["weight"].numel() * size * size
            size *= 2
    return total


def flatten(x: Tensor, d: int) -> Tensor:
    """(..., *shape) -> (..., d), flattening the trailing dims whose product is d.

    The params know d but not the input shape. An x whose last axis has d
    elements is returned as it is; otherwise the widest trailing block with d
    elements is taken, keeping at least one leading (batch) axis: (b, 1, 28, 28)
    becomes (b, 784), not (b, 1, 784).
    """
    if x.ndim >= 1 and x.shape[-1] == d:
        return x
    size, found = 1, None
    for k in range(1, x.ndim):
        size *= x.shape[-k]
        if size == d:
            found = k
    if found is None:
        raise ValueError(f"expected examples with {d} features in total; got a tensor of shape {tuple(x.shape)}")
    return x.reshape(*x.shape[:-found], d)


def flatten_example(x: Tensor, d: int) -> Tensor:
    """One example, (*shape) -> (d,); raises a ValueError if it does not have d elements."""
    if x.numel() != d:
        raise ValueError(f"expected one example with {d} features in total; got a tensor of shape {tuple(x.shape)}")
    return x.reshape(d)


def flat_features(params: Params, out: Tensor) -> Tensor:
    """The decoder's output as flat features: (..., c, h, w) -> (..., d) for conv; MLP output as it is."""
    if architecture(params).arch == "mlp":
        return out
    return rearrange(out, "... c h w -> ... (c h w)")


def one_hot(y: Tensor, n_classes: int, dtype: torch.dtype) -> Tensor:
    """Labels as one-hot rows: int (...,) -> (..., n); a float (..., n) passes through.

    Built by comparison with ``arange`` (no ``.item()``), so it works under vmap
    and torch.compile; an int label outside [0, n) gives a row of zeros.

    Example:
        >>> one_hot(torch.tensor([2, 0]), 3, torch.float32)
        tensor([[0., 0., 1.],
                [1., 0., 0.]])
    """
    if y.is_floating_point():
        if y.ndim == 0 or y.shape[-1] != n_classes:
            raise ValueError(f"float labels must be one-hot rows (..., {n_classes}); got shape {tuple(y.shape)}")
        return y.to(dtype)
    if y.dtype == torch.bool or y.is_complex():
        raise TypeError(f"labels must be integer class indices or float one-hot rows; got dtype {y.dtype}")
    return (y.unsqueeze(-1) == torch.arange(n_classes, device=y.device)).to(dtype)


def _condition(a: Architecture, h: Tensor, y: Tensor | None) -> Tensor:
    """h (..., f) -> (..., f + n) with the one-hot label appended, for a conditional model."""
    if a.n_classes == 0:
        if y is not None:
            raise ValueError("these params are unconditional (n_classes=0); got labels y")
        return h
    if y is None:
        raise ValueError(f"these params are conditional on {a.n_classes} classes; pass labels y")
    c = torch.broadcast_to(one_hot(y, a.n_classes, h.dtype), (*h.shape[:-1], a.n_classes))
    return torch.cat([h, c], dim=-1)


def _to_image(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """(..., c, h, w), (..., c*h*w) or, for one channel, (..., h, w) -> (..., c, h, w)."""
    c, hh, ww = shape
    if x.ndim >= 3 and tuple(x.shape[-3:]) == shape:
        return x
    if x.ndim >= 1 and x.shape[-1] == c * hh * ww:
        return rearrange(x, "... (c h w) -> ... c h w", c=c, h=hh, w=ww)
    if c == 1 and x.ndim >= 2 and tuple(x.shape[-2:]) == (hh, ww):
        return rearrange(x, "... h w -> ... 1 h w")
    raise ValueError(f"expected images (..., {c}, {hh}, {ww}) or flat (..., {c * hh * ww}); got {tuple(x.shape)}")


def _dense(layers: list[Params], h: Tensor, act, *, act_last: bool = False) -> Tensor:
    for layer in layers[:-1]:
        h = act(linear(layer, h))
    h = linear(layers[-1], h)
    return act(h) if act_last else h


def encode(
    params: Params, x: Tensor, y: Tensor | None = None, *, activation: str = "relu"
) -> tuple[Tensor, Tensor]:
    """The Gaussian posterior q(z|x[, y]) = N(mu, diag exp(logvar)).

    Args:
        x: (b, *input_shape) or (b, d); a single example without the batch axis
            works too, which is what :func:`torch.func.vmap` hands in.
        y: labels of a conditional VAE: int (b,) or one-hot (b, n); ``None``
            for an unconditional one.
        activation: the hidden activation, one of :data:`ACTIVATIONS`; it must
            be the one the params were trained with (a param dict does not record it).

    Returns:
        mu, logvar: each (b, z). logvar is clamped to [-30, 20].

    Example:
        >>> params = init((1, 28, 28), latent_dim=8, arch="conv")
        >>> mu, logvar = encode(params, torch.rand(5, 1, 28, 28))
        >>> mu.shape
        torch.Size([5, 8])
    """
    act = activation_fn(activation)
    a = architecture(params)
    if a.arch == "mlp":
        h = _condition(a, flatten(x, a.input_shape[0]), y)
    else:
        img = _to_image(x, a.input_shape)
        img, ps = pack([img], "* c h w")  # conv2d wants exactly one batch axis
        for layer in a.enc_conv:
            img = act(conv(layer, img))
        [h] = unpack(rearrange(img, "n c h w -> n (c h w)"), ps, "* f")
        h = _condition(a, h, y)
    mu, logvar = _dense(a.enc_dense, h, act).chunk(2, dim=-1)
    return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)


def decode(params: Params, z: Tensor, y: Tensor | None = None, *, activation: str = "relu") -> Tensor:
    """The decoder's output for latents z: (b, z) -> (b, d) for an MLP, (b, c, h, w) for conv.

    For the Bernoulli likelihood these are logits (apply ``sigmoid`` for
    probabilities); for the Gaussian likelihood, the mean. Any leading axes of
    z are kept: (k, b, z) -> (k, b, ...).

    Args:
        z: (b, z).
        y: labels of a conditional VAE: int (b,) or one-hot (b, n), broadcast
            against z's leading axes; ``None`` for an unconditional one.
        activation: the hidden activation, one of :data:`ACTIVATIONS` (as for :func:`encode`).

    Example:
        >>> params = init((1, 64, 64), latent_dim=10, arch="conv")
        >>> decode(params, torch.randn(3, 10)).shape
        torch.Size([3, 1, 64, 64])
        >>> decode(init((784,), hidden=(200, 200)), torch.randn(3, 20), activation="tanh").shape
        torch.Size([3, 784])
    """
    act = activation_fn(activation)
    a = architecture(params)
    h = _dense(a.dec_dense, _condition(a, z, y), act, act_last=a.arch == "conv")
    if a.arch == "mlp":
        return h
    c, s, _ = a.feature_shape
    h, ps = pack([h], "* f")
    img = rearrange(h, "n (c h w) -> n c h w", c=c, h=s, w=s)
    for layer in a.dec_conv[:-1]:
        img = act(conv_transpose(layer, img))
    img = conv_transpose(a.dec_conv[-1], img)
    [img] = unpack(img, ps, "* c h w")
    return img


def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    """z = mu + exp(logvar / 2) * eps; eps ~ N(0, I) is drawn by the caller.

    All arguments broadcast: (b, z) with eps (b, z), or eps (k, b, z) for k
    samples per example.
    """
    return mu + torch.exp(0.5 * logvar) * eps


def labels_tensor(labels, n: int, n_classes: int, *, device: torch.device | str | None = None) -> Tensor:
    """Check user labels (an int, ints (n,), or one-hot (n, n_classes)) and return them as a tensor.

    Host-side validation for user-facing functions (not for use inside a step).
    """
    if n_classes == 0:
        raise ValueError("these params are unconditional (n_classes=0); got labels")
    if isinstance(labels, int) and not isinstance(labels, bool):
        labels = torch.full((n,), labels, dtype=torch.int64)
    if not isinstance(labels, Tensor):
        try:
            labels = torch.as_tensor(labels)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(
                f"labels must be ints (n,) or one-hot rows (n, {n_classes}); got {type(labels).__name__}"
            ) from err
    if labels.is_floating_point():
        if labels.shape != (n, n_classes):
            raise ValueError(f"one-hot labels must have shape ({n}, {n_classes}); got {tuple(labels.shape)}")
    elif labels.dtype in (torch.bool,) or labels.is_complex():
        raise TypeError(f"labels must be integer class indices or float one-hot rows; got dtype {labels.dtype}")
    else:
        if labels.shape != (n,):
            raise ValueError(f"integer labels must have shape ({n},); got {tuple(labels.shape)}")
        if n and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
            raise ValueError(
                f"labels must lie in [0, {n_classes}); got values in [{int(labels.min())}, {int(labels.max())}]"
            )
    return labels.to(device) if device is not None else labels


def sample(
    params: Params,
    n: int,
    *,
    seed: int = 0,
    likelihood: str = "bernoulli",
    labels: int | Sequence[int] | Tensor | None = None,
    activation: str = "relu",
) -> Tensor:
    """n draws of the decoder's mean from the prior: z ~ N(0, I), x = E[x|z, y].

    Args:
        labels: for a conditional VAE, the class of each draw: one int for all,
            ints (n,) or one-hot (n, n_classes).
        activation: the hidden activation the params were trained with.

    Returns:
        (n, d) for an MLP, (n, c, h, w) for conv: probabilities (sigmoid of
        the logits) for ``"bernoulli"``, the mean for ``"gaussian"``.

    Example:
        >>> xs = sample(init((784,)), 16, seed=0)
        >>> xs.shape
        torch.Size([16, 784])
        >>> sample(init((784,), n_classes=10), 4, labels=[0, 1, 2, 3]).shape
        torch.Size([4, 784])
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}")
    if likelihood not in ("bernoulli", "gaussian"):
        raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian'; got {likelihood!r}")
    activation_fn(activation)  # checked before any work
    a = architecture(params)
    w = a.dec_dense[0]["weight"]
    y = None if labels is None else labels_tensor(labels, n, a.n_classes, device=w.device)
    gen = torch.Generator(device=w.device).manual_seed(seed)
    z = torch.randn(n, a.latent_dim, generator=gen, device=w.device, dtype=w.dtype)
    out = decode(params, z, y, activation=activation)
    return torch.sigmoid(out) if likelihood == "bernoulli" else out
