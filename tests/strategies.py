"""Hypothesis strategies: small shapes, bounded floats, and seeds.

Tensors are never drawn element by element: hypothesis draws a seed, and
:func:`randn` / :func:`rand` turn it into a tensor through a local
``torch.Generator``, so examples stay small, shrink well and never touch the
global RNG.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from hypothesis import strategies as st

seeds = st.integers(min_value=0, max_value=2**32 - 1)
"""Seeds for params and data (never for the noise of a statistical assertion)."""

scales = st.floats(min_value=0.1, max_value=2.0, allow_nan=False, allow_infinity=False)
"""Multiplicative parameter scales, bounded so every test stays well conditioned."""

batch_sizes = st.integers(min_value=1, max_value=6)
data_dims = st.integers(min_value=1, max_value=8)
latent_dims = st.integers(min_value=1, max_value=4)
hidden_layers = st.lists(st.integers(min_value=1, max_value=8), min_size=0, max_size=2).map(tuple)
likelihoods = st.sampled_from(("bernoulli", "gaussian"))


@st.composite
def vae_shapes(draw, *, max_hidden_layers: int = 2) -> tuple[int, int, tuple[int, ...]]:
    """(d, z, hidden) of a small VAE."""
    hidden = draw(st.lists(st.integers(1, 8), min_size=0, max_size=max_hidden_layers).map(tuple))
    return draw(data_dims), draw(latent_dims), hidden


def generator(seed: int) -> torch.Generator:
    """A fresh CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def randn(seed: int, *shape: int, dtype: torch.dtype = torch.float64, scale: float = 1.0) -> torch.Tensor:
    """scale * N(0, 1) noise of ``shape``, a pure function of ``seed``."""
    return scale * torch.randn(shape, generator=generator(seed), dtype=dtype)


def rand(seed: int, *shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """U(0, 1) values of ``shape``, a pure function of ``seed``."""
    return torch.rand(shape, generator=generator(seed), dtype=dtype)


def scaled_params(params: dict[str, torch.Tensor], seed: int, scale: float) -> dict[str, torch.Tensor]:
    """``params`` with every leaf replaced by scale * N(0, 1) draws (all leaves random, biases too)."""
    gen = generator(seed)
    return {k: scale * torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in params.items()}


def data_for(likelihood: str, seed: int, b: int, d: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(b, d) data valid for the likelihood: [0, 1] intensities or N(0, 1) values."""
    return rand(seed, b, d, dtype=dtype) if likelihood == "bernoulli" else randn(seed, b, d, dtype=dtype)


def shapes_of(params: dict[str, torch.Tensor]) -> dict[str, Sequence[int]]:
    """The shape of every leaf, for assertions."""
    return {k: tuple(v.shape) for k, v in params.items()}
