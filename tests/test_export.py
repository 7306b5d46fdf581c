"""The export path: ``torch.export.export`` of :func:`vaefunc.to_module` computes what the functional model does.

``torch.jit.trace`` is not offered: torch 2.13 deprecates it (a DeprecationWarning on every call).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vaefunc


def exact(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0)


class _Encode(nn.Module):
    """A module whose forward is ``VAEModule.encode`` (torch.export exports a module's forward)."""

    def __init__(self, vae: vaefunc.VAEModule):
        super().__init__()
        self.vae = vae

    def forward(self, x):
        return self.vae.encode(x)


@pytest.fixture(scope="module", params=["relu", "tanh"])
def trained(request):
    model = vaefunc.VAE((1, 6, 6), latent_dim=3, hidden=(16, 8), activation=request.param)
    return model, model.init(seed=1)


def _inputs(model, b, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, *model.input_shape, generator=g), torch.randn(b, model.latent_dim, generator=g),
            torch.randn(b, model.latent_dim, generator=g))  # fmt: skip


def test_exported_forward_encode_and_decode_equal_the_functional_model(trained):
    model, params = trained
    module = vaefunc.to_module(params, model=model).eval().requires_grad_(False)
    x, eps, z = _inputs(model, 5, 0)
    batch = torch.export.Dim("batch")
    forward = torch.export.export(module, (x, eps), dynamic_shapes=({0: batch}, {0: batch})).module()
    encode = torch.export.export(_Encode(module), (x,), dynamic_shapes=({0: batch},)).module()
    decode = torch.export.export(module.decoder, (z,), dynamic_shapes=({0: batch},)).module()
    for b, seed in ((5, 1), (2, 2)):  # the batch size the program was traced with, and another
        x, eps, z = _inputs(model, b, seed)
        mu, logvar = model.encode(params, x)
        out, mu_e, logvar_e = forward(x, eps)
        exact(mu_e, mu)
        exact(logvar_e, logvar)
        exact(out, model.decode(params, model.reparameterize(mu, logvar, eps)))
        for got, want in zip(encode(x), (mu, logvar), strict=True):
            exact(got, want)
        exact(decode(z), model.decode(params, z))


def test_an_exported_program_saves_and_loads_without_vaefunc_objects(tmp_path):
    model = vaefunc.VAE((12,), latent_dim=2, hidden=(8,))
    params = model.init(seed=0)
    module = vaefunc.to_module(params, model=model).eval().requires_grad_(False)
    x, eps, _ = _inputs(model, 4, 0)
    torch.export.save(torch.export.export(module, (x, eps)), tmp_path / "vae.pt2")
    loaded = torch.export.load(tmp_path / "vae.pt2").module()
    exact(loaded(x, eps)[1], model.encode(params, x)[0])
