"""Type aliases shared by every module.

Axis legend used in docstrings (einops letters):
    b  batch            d  data features (flattened input)
    h  hidden units     z  latent dimensions
    k  importance samples   m  ensemble members
    s  steps of an epoch
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

Params = dict[str, Tensor]
"""A model or gradient: flat dict of tensors with dotted, nn.Module-style keys."""

Metrics = dict[str, Tensor]
"""Named 0-d tensors returned by a step; read on the host only at sync points."""

OptState = Any
"""An optimizer state: a NamedTuple of Params and 0-d tensors."""
