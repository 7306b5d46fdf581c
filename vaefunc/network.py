"""The encoder and decoder networks of a :class:`vaefunc.VAE` spec, as pure functions.

Two architectures share one key layout, the state dict of an ``encoder`` and a
``decoder`` ``nn.Sequential``. The spec says which, so nothing here reads the
architecture back from the params: :func:`layout` turns the spec into the
param keys once, and :func:`encode` and :func:`decode` walk them.

MLP (``arch="mlp"``)::

    encoder = Sequential(Linear(d [+ n], h1), Act, ..., Linear(h_n, 2z))     # mu and logvar, stacked
    decoder = Sequential(Linear(z [+ n], h_n), Act, ..., Linear(h1, d))      # logits, or the Gaussian mean

Convolutional (``arch="conv"``, L stride-2 convolutions, kernel k, padding k/2 - 1)::

    encoder = Sequential(Conv2d(c, c1, k, 2), Act, ..., Conv2d(c_{L-1}, c_L, k, 2), Act,
                         Flatten, Linear(c_L*s*s [+ n], h1), Act, ..., Linear(h_n, 2z))
    decoder = Sequential(Linear(z [+ n], h_n), Act, ..., Linear(h1, c_L*s*s), Act, Unflatten(1, (c_L, s, s)),
                         ConvTranspose2d(c_L, c_{L-1}, k, 2), Act, ..., ConvTranspose2d(c1, c, k, 2))

with s = H / 2^L. A conditional VAE (``n_classes=n``) concatenates the one-hot
label to the encoder's input features (for conv: to the flattened convolution
features) and to z. ``Act`` is the spec's hidden activation.

Axis letters: b batch, d data features (c*h*w for images), c channels,
h w image height and width, z latent, n classes.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from einops import pack, rearrange, unpack
from torch import Tensor

from . import custom
from ._types import Params
from .nn import activation_fn, conv, conv_transpose, init_conv, init_mlp

if TYPE_CHECKING:
    from .spec import VAE

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0
"""The encoder's log-variance is clamped here so exp(logvar) stays finite in float32."""

Keys = tuple[str, str]
"""(weight key, bias key) of one layer."""


class Layout(NamedTuple):
    """The param keys of a spec's layers, in order, and their shapes."""

    enc_conv: tuple[Keys, ...]  # the encoder's convolutions (empty for mlp)
    enc_dense: tuple[Keys, ...]  # the encoder's linear layers
    dec_dense: tuple[Keys, ...]  # the decoder's linear layers
    dec_conv: tuple[Keys, ...]  # the decoder's transposed convolutions (empty for mlp)
    feature_shape: tuple[int, ...]  # (c_L, s, s) at the bottleneck (empty for mlp)
    shapes: dict[str, tuple[int, ...]]  # every network key -> its shape
    classifier: tuple[Keys, ...] = ()  # q(y|x)'s linear layers (a semi-supervised model only)
    top_enc: tuple[Keys, ...] = ()  # q(z2|z1)'s linear layers (a second stochastic layer only)
    top_dec: tuple[Keys, ...] = ()  # p(z1|z2)'s linear layers
    flow: tuple[tuple[Keys, ...], ...] = ()  # each IAF step's MADE layers


def layout(model: VAE) -> Layout:
    """The keys and shapes of the network a spec describes (prior and likelihood keys excluded)."""
    lay = _custom_layout(model) if model.arch == "custom" else _vae_layout(model)
    if model.semi_supervised and model.arch != "custom":
        sizes = (math.prod(model.input_shape), *model.hidden, model.n_classes)
        lay = lay._replace(classifier=_dense_keys("classifier", sizes, 0, lay.shapes))
    if model.top_latent_dim:
        enc, dec = top_sizes(model)
        lay = lay._replace(top_enc=_dense_keys("top_encoder", enc, 0, lay.shapes),
                           top_dec=_dense_keys("top_decoder", dec, 0, lay.shapes))  # fmt: skip
    steps = tuple(_dense_keys(f"flow.{t}", flow_sizes(model), 0, lay.shapes) for t in range(model.flow_steps or 0))
    return lay._replace(flow=steps)


def top_sizes(model: VAE) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The widths of q(z2|z1[, y]) and p(z1|z2[, y]), input first: each outputs a mean and a log-variance."""
    n, z1, z2, hidden = model.n_classes, model.latent_dim, model.top_latent_dim, model.top_hidden or ()
    return (z1 + n, *hidden, 2 * z2), (z2 + n, *hidden[::-1], 2 * z1)


def flow_sizes(model: VAE) -> tuple[int, ...]:
    """The widths of one IAF step's MADE: z -> flow_hidden -> (m, s), 2z."""
    return (model.latent_dim, *(model.flow_hidden or ()), 2 * model.latent_dim)


def _custom_layout(model: VAE) -> Layout:
    shapes = {f"{role}.{k}": shape for role in custom.PREFIXES if (net := getattr(model, role)) is not None
              for k, shape in net.shapes.items()}  # fmt: skip
    return Layout((), (), (), (), (), shapes)


def _vae_layout(model: VAE) -> Layout:
    n, z, hidden = model.n_classes, model.latent_dim, model.hidden
    shapes: dict[str, tuple[int, ...]] = {}
    if model.arch == "mlp":
        d = math.prod(model.input_shape)
        enc = _dense_keys("encoder", (d + n, *hidden, 2 * z), 0, shapes)
        dec = _dense_keys("decoder", (z + n, *hidden[::-1], d), 0, shapes)
        return Layout((), enc, dec, (), (), shapes)
    c, size = model.input_shape[0], model.input_shape[1]
    channels, k = model.channels or (), model.kernel
    depth, s = len(channels), size // 2 ** len(channels)
    flat = channels[-1] * s * s
    enc_conv = tuple(_conv_keys(f"encoder.{2 * i}", (c_out, c_in, k, k), c_out, shapes)
                     for i, (c_in, c_out) in enumerate(zip((c, *channels[:-1]), channels)))  # fmt: skip
    enc = _dense_keys("encoder", (flat + n, *hidden, 2 * z), 2 * depth + 1, shapes)
    dense = (z + n, *hidden[::-1], flat)
    dec = _dense_keys("decoder", dense, 0, shapes)
    start = 2 * (len(dense) - 1) + 1  # after the last linear's activation and the Unflatten
    widths = (*channels[::-1], c)
    dec_conv = tuple(_conv_keys(f"decoder.{start + 2 * i}", (c_in, c_out, k, k), c_out, shapes)
                     for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])))  # fmt: skip
    return Layout(enc_conv, enc, dec, dec_conv, (channels[-1], s, s), shapes)


def _dense_keys(prefix: str, sizes: tuple[int, ...], start: int, shapes: dict) -> tuple[Keys, ...]:
    keys = []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        name = f"{prefix}.{start + 2 * i}"
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (d_out, d_in), (d_out,)
        keys.append((f"{name}.weight", f"{name}.bias"))
    return tuple(keys)


def _conv_keys(name: str, weight: tuple[int, ...], c_out: int, shapes: dict) -> Keys:
    shapes[f"{name}.weight"], shapes[f"{name}.bias"] = weight, (c_out,)
    return f"{name}.weight", f"{name}.bias"


def init(model: VAE, gen: torch.Generator, *, dtype: torch.dtype, device) -> Params:
    """Fresh network params, drawn as the equivalent ``nn.Linear``/``nn.Conv2d`` stack would draw them.

    The draws come from ``gen`` in the order of the keys: the encoder's layers,
    then the decoder's (so a seed gives the same params as it always did), then
    a semi-supervised model's classifier, a second stochastic layer's networks
    and the IAF steps. A custom network's params come from its own init, with
    a seed drawn from ``gen`` (:func:`vaefunc.custom.from_module`).
    """
    kw = {"dtype": dtype, "device": device}
    if model.arch == "custom":
        params = _init_custom(model, gen, **kw)
    else:
        params = _init_vae(model, gen, **kw)
    if model.semi_supervised and model.arch != "custom":
        sizes = (math.prod(model.input_shape), *model.hidden, model.n_classes)
        params |= init_mlp(gen, sizes, prefix="classifier", **kw)
    if model.top_latent_dim:
        enc, dec = top_sizes(model)
        params |= init_mlp(gen, enc, prefix="top_encoder", **kw) | init_mlp(gen, dec, prefix="top_decoder", **kw)
    for t in range(model.flow_steps or 0):
        params |= _init_made(gen, flow_sizes(model), f"flow.{t}", **kw)
    return params


def _init_custom(model: VAE, gen: torch.Generator, *, dtype: torch.dtype, device) -> Params:
    params: Params = {}
    for role in custom.PREFIXES:
        net = getattr(model, role)
        if net is not None:
            seed = int(torch.randint(2**62, (), generator=gen))
            fresh = net.init(seed)
            params |= {f"{role}.{k}": fresh[k].detach().to(dtype=dtype, device=device).clone() for k in net.shapes}
    return params


def _init_made(gen: torch.Generator, sizes: tuple[int, ...], prefix: str, *, dtype: torch.dtype, device) -> Params:
    """A MADE as ``nn.Linear`` layers would draw it, with its output layer at zero, so each IAF step
    starts near the identity (m = 0, s = 0: z' = sigmoid(FORGET_BIAS) z)."""
    params = init_mlp(gen, sizes, prefix=prefix, dtype=dtype, device=device)
    last = f"{prefix}.{2 * (len(sizes) - 2)}"
    return params | {f"{last}.weight": torch.zeros_like(params[f"{last}.weight"]),
                     f"{last}.bias": torch.zeros_like(params[f"{last}.bias"])}  # fmt: skip


def _init_vae(model: VAE, gen: torch.Generator, *, dtype: torch.dtype, device) -> Params:
    kw = {"dtype": dtype, "device": device}
    n, z, hidden = model.n_classes, model.latent_dim, model.hidden
    if model.arch == "mlp":
        d = math.prod(model.input_shape)
        params = init_mlp(gen, (d + n, *hidden, 2 * z), prefix="encoder", **kw)
        return params | init_mlp(gen, (z + n, *hidden[::-1], d), prefix="decoder", **kw)
    c, channels = model.input_shape[0], model.channels or ()
    depth = len(channels)
    flat = channels[-1] * (model.input_shape[1] // 2**depth) ** 2
    params = {}
    for i, (c_in, c_out) in enumerate(zip((c, *channels[:-1]), channels)):
        layer = init_conv(gen, c_in, c_out, model.kernel, **kw)
        params |= {f"encoder.{2 * i}.{k}": v for k, v in layer.items()}
    params |= init_mlp(gen, (flat + n, *hidden, 2 * z), prefix="encoder", start=2 * depth + 1, **kw)
    dense = (z + n, *hidden[::-1], flat)
    params |= init_mlp(gen, dense, prefix="decoder", **kw)
    start = 2 * (len(dense) - 1) + 1
    widths = (*channels[::-1], c)
    for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
        layer = init_conv(gen, c_in, c_out, model.kernel, transpose=True, **kw)
        params |= {f"decoder.{start + 2 * i}.{k}": v for k, v in layer.items()}
    return params


def encode(model: VAE, params: Params, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The Gaussian posterior q(z|x[, y]) = N(mu, diag exp(logvar)).

    Args:
        x: (b, *input_shape) or (b, d); one example without the batch axis
            works too (what ``vmap`` hands in).
        labels: a conditional model's labels, int (b,) or one-hot (b, n).

    Returns:
        mu, logvar: each (b, z); logvar clamped to [-30, 20].
    """
    if model.arch == "custom":
        return _custom_encode(model, params, x, labels)
    lay, act = model.layout, activation_fn(model.activation)
    if model.arch == "mlp":
        h = condition(model, flatten(x, math.prod(model.input_shape)), labels)
    else:
        img, ps = pack([to_image(x, model.input_shape)], "* c h w")  # conv2d wants exactly one batch axis
        for keys in lay.enc_conv:
            img = act(_conv(params, keys, img, transpose=False))
        [h] = unpack(rearrange(img, "n c h w -> n (c h w)"), ps, "* f")
        h = condition(model, h, labels)
    mu, logvar = _dense(params, lay.enc_dense, h, act).chunk(2, dim=-1)
    return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)


def decode(model: VAE, params: Params, z: Tensor, labels: Tensor | None = None) -> Tensor:
    """The decoder's output for latents z: (..., z) -> (..., d) for an MLP, (..., c, h, w) for conv.

    Logits for the (continuous) Bernoulli likelihood, the mean for the
    Gaussian; ``labels`` broadcast against z's leading axes.
    """
    if model.arch == "custom":
        return _custom_decode(model, params, z, labels)
    lay, act = model.layout, activation_fn(model.activation)
    h = _dense(params, lay.dec_dense, condition(model, z, labels), act, act_last=model.arch == "conv")
    if model.arch == "mlp":
        return h
    c, s, _ = lay.feature_shape
    h, ps = pack([h], "* f")
    img = rearrange(h, "n (c h w) -> n c h w", c=c, h=s, w=s)
    for keys in lay.dec_conv[:-1]:
        img = act(_conv(params, keys, img, transpose=True))
    img = _conv(params, lay.dec_conv[-1], img, transpose=True)
    [img] = unpack(img, ps, "* c h w")
    return img


def classify(model: VAE, params: Params, x: Tensor) -> Tensor:
    """A semi-supervised model's classifier q(y|x): x (b, *input_shape) or (b, d) -> logits (b, n_classes)."""
    if not model.semi_supervised:
        raise ValueError("classify needs a semi-supervised model (VAE(..., n_classes=n, semi_supervised=True))")
    if model.arch == "custom":
        xs, lead = _batched(flatten(x, model.data_dim), model.input_shape)
        return custom.call(model.classifier, "classifier", params, xs, None).reshape(*lead, model.n_classes)
    h = flatten(x, math.prod(model.input_shape))
    return _dense(params, model.layout.classifier, h, activation_fn(model.activation))


def flat_output(model: VAE, out: Tensor) -> Tensor:
    """The decoder's output as flat features: (..., *input_shape) -> (..., d); MLP output as it is."""
    if model.arch == "mlp" or len(model.input_shape) == 1:
        return out
    return out.reshape(*out.shape[: out.ndim - len(model.input_shape)], model.data_dim)


def _batched(x: Tensor, shape: tuple[int, ...]) -> tuple[Tensor, tuple[int, ...]]:
    """Flat examples (..., d) as one batch (N, *shape) for a custom network, and the leading axes."""
    lead = tuple(x.shape[:-1])
    return x.reshape(-1, *shape), lead


def _custom_labels(model: VAE, labels: Tensor | None, lead: tuple[int, ...], dtype: torch.dtype) -> Tensor | None:
    """A conditional custom network's one-hot labels, (N, n) against the batch :func:`_batched` made."""
    rows = label_rows(model, labels, lead, dtype)
    return None if rows is None else rows.reshape(-1, model.n_classes)


def _custom_encode(model: VAE, params: Params, x: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
    """The user's encoder on x (..., d) or (..., *input_shape): mu, logvar (..., z)."""
    xs, lead = _batched(flatten(x, model.data_dim), model.input_shape)
    out = custom.call(model.encoder, "encoder", params, xs, _custom_labels(model, labels, lead, xs.dtype))
    mu, logvar = out if isinstance(out, tuple) else out.chunk(2, dim=-1)
    z = model.latent_dim
    return mu.reshape(*lead, z), logvar.reshape(*lead, z).clamp(LOGVAR_MIN, LOGVAR_MAX)


def _custom_decode(model: VAE, params: Params, z: Tensor, labels: Tensor | None) -> Tensor:
    """The user's decoder on z (..., z): (..., *input_shape)."""
    lead = tuple(z.shape[:-1])
    zs = z.reshape(-1, z.shape[-1])
    out = custom.call(model.decoder, "decoder", params, zs, _custom_labels(model, labels, lead, zs.dtype))
    return out.reshape(*lead, *model.input_shape)


def _dense(params: Params, layers: tuple[Keys, ...], h: Tensor, act, *, act_last: bool = False) -> Tensor:
    for w, b in layers[:-1]:
        h = act(F.linear(h, params[w], params[b]))
    w, b = layers[-1]
    h = F.linear(h, params[w], params[b])
    return act(h) if act_last else h


def _conv(params: Params, keys: Keys, img: Tensor, *, transpose: bool) -> Tensor:
    """The layer ``keys`` names as :func:`vaefunc.nn.conv` (halving the size) or
    :func:`vaefunc.nn.conv_transpose` (doubling it)."""
    layer = {"weight": params[keys[0]], "bias": params[keys[1]]}
    return conv_transpose(layer, img) if transpose else conv(layer, img)


def condition(model: VAE, h: Tensor, labels: Tensor | None) -> Tensor:
    """h (..., f) -> (..., f + n) with the one-hot label appended, for a conditional model."""
    rows = label_rows(model, labels, tuple(h.shape[:-1]), h.dtype)
    return h if rows is None else torch.cat([h, rows], dim=-1)


def label_rows(model: VAE, labels: Tensor | None, lead: tuple[int, ...], dtype: torch.dtype) -> Tensor | None:
    """The one-hot labels broadcast to (*lead, n) for a conditional model; None for an unconditional one.
    Labels exactly when the model is conditional (a ValueError otherwise)."""
    n = model.n_classes
    if n == 0:
        if labels is not None:
            raise ValueError("these params are unconditional (n_classes=0); got labels y")
        return None
    if labels is None:
        raise ValueError(f"these params are conditional on {n} classes; pass labels y")
    return torch.broadcast_to(one_hot(labels, n, dtype), (*lead, n))


def one_hot(y: Tensor, n_classes: int, dtype: torch.dtype) -> Tensor:
    """Labels as one-hot rows: int (...,) -> (..., n); a float (..., n) passes through.

    Built by comparison with ``arange`` (no ``.item()``), so it works under vmap
    and torch.compile; an int label outside [0, n) gives a row of zeros (the
    public functions check the range before they get here).

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
    if y.dtype in (torch.uint16, torch.uint32, torch.uint64):  # numpy's uint64 labels: torch promotes no uint64
        y = y.to(torch.int64)
    return (y.unsqueeze(-1) == torch.arange(n_classes, device=y.device)).to(dtype)


def flatten(x: Tensor, d: int) -> Tensor:
    """(..., *shape) -> (..., d), flattening the trailing dims whose product is d.

    An x whose last axis has d elements is returned as it is; otherwise the
    widest trailing block with d elements is taken, keeping at least one
    leading (batch) axis: (b, 1, 28, 28) becomes (b, 784), not (b, 1, 784).
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


def to_image(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """(..., c, h, w), (..., c*h*w) or, for one channel, (..., h, w) -> (..., c, h, w)."""
    c, hh, ww = shape
    if x.ndim >= 3 and tuple(x.shape[-3:]) == shape:
        return x
    if x.ndim >= 1 and x.shape[-1] == c * hh * ww:
        return rearrange(x, "... (c h w) -> ... c h w", c=c, h=hh, w=ww)
    if c == 1 and x.ndim >= 2 and tuple(x.shape[-2:]) == (hh, ww):
        return rearrange(x, "... h w -> ... 1 h w")
    raise ValueError(f"expected images (..., {c}, {hh}, {ww}) or flat (..., {c * hh * ww}); got {tuple(x.shape)}")


def macs_per_example(model: VAE) -> int:
    """Multiply-accumulates of one encoder and one decoder pass over one example.

    A linear layer costs its weight's size; a convolution its weight's size
    times the number of output pixels (a transposed one: of input pixels); a
    custom network what ``torch.utils.flop_counter`` counts on one example.
    A second stochastic layer's networks and the IAF steps are counted too.
    """
    lay = model.layout
    size = lambda keys: math.prod(lay.shapes[keys[0]])  # noqa: E731
    extra = lay.top_enc + lay.top_dec + tuple(keys for step in lay.flow for keys in step)
    total = sum(size(keys) for keys in lay.enc_dense + lay.dec_dense + extra)
    if model.arch == "custom":
        total += _custom_macs(model)
    if model.arch == "conv":
        side = model.input_shape[1]
        for keys in lay.enc_conv:
            side //= 2
            total += size(keys) * side * side
        for keys in lay.dec_conv:
            total += size(keys) * side * side
            side *= 2
    return total


@functools.lru_cache(maxsize=64)
def _custom_macs(model: VAE) -> int:
    """The multiply-accumulates ``torch.utils.flop_counter`` counts for one example through a custom
    encoder and decoder (half its FLOPs), once per spec."""
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415

    params = model.init(seed=0)
    y = torch.zeros(1, dtype=torch.int64) if model.n_classes else None
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        _custom_encode(model, params, torch.zeros(1, model.data_dim), y)
        _custom_decode(model, params, torch.zeros(1, model.latent_dim), y)
    return counter.get_total_flops() // 2
