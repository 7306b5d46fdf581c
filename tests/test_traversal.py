"""Latent traversals: the right z along each axis, and a figure written atomically."""

from __future__ import annotations

import pytest
import torch

import vaefunc
from vaefunc.traversal import save_traversal_figure, traversal


def test_traversal_sweeps_one_dimension_from_the_encoder_mean():
    model = vaefunc.VAE((1, 8, 8), latent_dim=3, hidden=(4,), arch="conv", channels=(2,))
    params = model.init(0)
    x = torch.rand(1, 8, 8)
    out = traversal(params, x, span=2.0, steps=5)
    assert out.shape == (3, 5, 1, 8, 8)
    mu, _ = model.encode(params, x.unsqueeze(0))
    z = mu.repeat(5, 1)
    z[:, 1] = torch.linspace(-2.0, 2.0, 5)
    torch.testing.assert_close(out[1], torch.sigmoid(model.decode(params, z)))
    assert traversal(params, x, dims=[2], steps=3).shape == (1, 3, 1, 8, 8)
    with pytest.raises(ValueError, match="dims"):
        traversal(params, x, dims=[3])
    with pytest.raises(ValueError, match="steps"):
        traversal(params, x, steps=1)


def test_conditional_traversal_and_figure(tmp_path):
    params = vaefunc.VAE((16,), latent_dim=2, hidden=(4,), n_classes=3).init(0)
    out = traversal(params, torch.rand(16), y=torch.tensor(2), steps=4)
    assert out.shape == (2, 4, 16)
    plain = vaefunc.VAE((16,), latent_dim=2, hidden=(4,)).init(0)
    path = save_traversal_figure(plain, torch.rand(16), tmp_path / "figs" / "t.png", steps=4, title="t")
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["t.png"]  # no temporary file left behind


def test_a_conditional_traversal_builds_its_label_on_the_params_device():
    """Params on another device than the CPU (the meta device stands in for a GPU here): the label
    is made there before the encoder sees it."""
    params = vaefunc.VAE((16,), latent_dim=2, hidden=(4,), n_classes=3).init(0)
    on_meta = {k: v.to("meta") for k, v in params.items()}
    for label in (2, torch.tensor([0.0, 0.0, 1.0])):
        out = traversal(on_meta, torch.rand(16), steps=3, labels=label)
        assert out.shape == (2, 3, 16) and out.device.type == "meta"
