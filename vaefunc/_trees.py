"""Writing one tree of tensors into another in place: the one copy the loop's owned buffers need."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten


def copy_into(dst, src, *, mismatch: str) -> None:
    """Overwrite every tensor of the tree ``dst`` with the one at the same place in ``src``, in one
    multi-tensor copy (non-tensor leaves are left alone); ``ValueError(mismatch)`` if the trees'
    structures differ."""
    old, spec = tree_flatten(dst)
    new, new_spec = tree_flatten(src)
    if new_spec != spec:
        raise ValueError(mismatch)
    torch._foreach_copy_([t for t in old if isinstance(t, Tensor)], [t for t in new if isinstance(t, Tensor)])
