"""vaefunc.to_module / vaefunc.from_state_dict: the same VAE as an nn.Module, and back."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

import vaefunc


def exact(a, b):
    assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("hidden", [(), (16,), (16, 8)])
def test_same_forward(hidden):
    model = vaefunc.VAE((1, 5, 5), latent_dim=3, hidden=hidden)
    params = model.init(0)
    module = vaefunc.to_module(params)
    g = torch.Generator().manual_seed(1)
    x, eps = torch.rand(7, 25, generator=g), torch.randn(7, 3, generator=g)
    mu, logvar = model.encode(params, x)
    exact(module.encode(x)[0], mu)
    exact(module.encode(x)[1], logvar)
    exact(module.decode(eps), model.decode(params, eps))
    out, mu2, _ = module(x, eps)
    exact(out, model.decode(params, model.reparameterize(mu, logvar, eps)))
    exact(mu2, mu)


def test_same_gradients():
    model = vaefunc.VAE((6,), latent_dim=2, hidden=(4,))
    params = model.init(0, dtype=torch.float64)
    module = vaefunc.to_module(params)
    g = torch.Generator().manual_seed(0)
    x, eps = torch.rand(5, 6, generator=g, dtype=torch.float64), torch.randn(5, 2, generator=g, dtype=torch.float64)
    grads = torch.func.grad(lambda p: -model.elbo(p, x, eps).mean())(params)
    out, mu, logvar = module(x, eps)
    rec = -torch.nn.functional.binary_cross_entropy_with_logits(out, x, reduction="none").sum(-1)
    loss = -(rec - vaefunc.kl_normal(mu, logvar)).mean()
    loss.backward()
    for name, p in module.named_parameters():
        assert_close(p.grad, grads[name], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "activation, module_type",
    [("relu", torch.nn.ReLU), ("tanh", torch.nn.Tanh), ("elu", torch.nn.ELU), ("softplus", torch.nn.Softplus),
     ("gelu", torch.nn.GELU), ("silu", torch.nn.SiLU)],
)  # fmt: skip
def test_the_module_of_each_activation_equals_the_functional_model(activation, module_type):
    model = vaefunc.VAE((6,), latent_dim=2, hidden=(5, 4), activation=activation)
    params = model.init(0, dtype=torch.float64)
    module = vaefunc.to_module(params, model=model)
    assert module.activation == activation
    assert [type(m) for m in module.encoder] == [torch.nn.Linear, module_type] * 2 + [torch.nn.Linear]
    assert [type(m) for m in module.decoder] == [torch.nn.Linear, module_type] * 2 + [torch.nn.Linear]
    g = torch.Generator().manual_seed(1)
    x, eps = torch.rand(7, 6, generator=g, dtype=torch.float64), torch.randn(7, 2, generator=g, dtype=torch.float64)
    mu, logvar = model.encode(params, x)
    exact(module.encode(x)[0], mu)
    exact(module.encode(x)[1], logvar)
    exact(module.decode(eps), model.decode(params, eps))
    out, _, _ = module(x, eps)
    exact(out, model.decode(params, model.reparameterize(mu, logvar, eps)))
    assert vaefunc.to_module(params, activation=activation).activation == activation  # the keyword form
    if activation != "relu":  # negative control: the default (ReLU) module is another function
        assert not torch.allclose(vaefunc.to_module(params).encode(x)[0], mu)


def test_round_trip_and_independence():
    params = vaefunc.VAE((10,), latent_dim=2, hidden=(4,)).init(0)
    before = {k: v.clone() for k, v in params.items()}
    module = vaefunc.to_module(params)
    assert list(module.state_dict()) == list(params)
    back = vaefunc.from_state_dict(module.state_dict())
    assert list(back) == list(params)
    for k in params:
        exact(back[k], params[k])
    with torch.no_grad():
        module.encoder[0].weight.add_(1.0)
    for k in params:  # neither the params nor the dict taken from the module share its memory
        exact(params[k], before[k])
        exact(back[k], before[k])
    assert not back["encoder.0.weight"].requires_grad


def test_dtype_is_kept():
    params = vaefunc.VAE((3,), latent_dim=1, hidden=(2,)).init(0, dtype=torch.float64)
    assert vaefunc.to_module(params).encoder[0].weight.dtype == torch.float64


def test_bad_state_dicts():
    params = vaefunc.VAE((10,), latent_dim=2, hidden=(4,)).init(0)
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        vaefunc.from_state_dict([1, 2])
    broken = dict(params)
    del broken["decoder.0.bias"]
    with pytest.raises(ValueError, match="decoder.0"):
        vaefunc.from_state_dict(broken)
    with pytest.raises(ValueError, match="missing 'encoder.0.weight'"):
        vaefunc.to_module({"w": torch.zeros(1)})
