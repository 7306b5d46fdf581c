"""vaefunc._trees.copy_into: one in-place copy of a tree of tensors into another of the same structure."""

from __future__ import annotations

import pytest
import torch

from vaefunc._trees import copy_into


def test_copy_into_overwrites_every_tensor_in_place_and_leaves_other_leaves():
    dst = ({"w": torch.zeros(2, 3), "b": torch.zeros(3)}, (torch.zeros(()), 7))
    src = ({"w": torch.ones(2, 3), "b": torch.full((3,), 2.0)}, (torch.tensor(5.0), 9))
    w = dst[0]["w"]
    copy_into(dst, src, mismatch="different trees")
    assert dst[0]["w"] is w and torch.equal(w, torch.ones(2, 3))  # the same tensor, new values
    assert torch.equal(dst[0]["b"], torch.full((3,), 2.0)) and dst[1][0].item() == 5.0
    assert dst[1][1] == 7  # a non-tensor leaf is not written


def test_copy_into_refuses_another_structure_before_writing():
    dst = {"w": torch.zeros(2)}
    with pytest.raises(ValueError, match="different trees"):
        copy_into(dst, {"v": torch.ones(2)}, mismatch="different trees")
    assert torch.equal(dst["w"], torch.zeros(2))
