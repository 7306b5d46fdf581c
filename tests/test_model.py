"""The network: VAE.init, encode, decode, reparameterize and sample against the nn.Module oracle."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from torch.func import functional_call, grad

import vaefunc
from vaefunc.model import LOGVAR_MAX, LOGVAR_MIN
from tests import oracles
from tests import strategies as S

F64 = torch.float64


@given(shape=S.vae_shapes(), seed=S.seeds)
def test_init_equals_the_module_state_dict_after_manual_seed(shape, seed):
    d, z, hidden = shape
    params = vaefunc.VAE((d,), latent_dim=z, hidden=hidden).init(seed)
    expected = oracles.make_vae(d, z, hidden, seed=seed).state_dict()
    assert list(params) == list(expected)  # same keys, same order
    for k in params:
        assert params[k].dtype == torch.float32
        assert torch.equal(params[k], expected[k]), k


def test_init_layout_dtype_and_input_shape():
    params = vaefunc.VAE((1, 4, 5), latent_dim=3, hidden=(7, 6)).init(1, dtype=F64)
    assert S.shapes_of(params) == {
        "encoder.0.weight": (7, 20), "encoder.0.bias": (7,),
        "encoder.2.weight": (6, 7), "encoder.2.bias": (6,),
        "encoder.4.weight": (6, 6), "encoder.4.bias": (6,),
        "decoder.0.weight": (6, 3), "decoder.0.bias": (6,),
        "decoder.2.weight": (7, 6), "decoder.2.bias": (7,),
        "decoder.4.weight": (20, 7), "decoder.4.bias": (20,),
    }  # fmt: skip
    assert all(v.dtype == F64 for v in params.values())
    flat = vaefunc.VAE(20, latent_dim=3, hidden=(7, 6)).init(1, dtype=F64)
    assert all(torch.equal(flat[k], params[k]) for k in params)  # only d matters
    assert not torch.equal(vaefunc.VAE(20).init(2)["encoder.0.weight"], vaefunc.VAE(20).init(1)["encoder.0.weight"])


def test_init_with_no_hidden_layer_is_linear():
    params = vaefunc.VAE((6,), latent_dim=2, hidden=()).init(0)
    assert S.shapes_of(params) == {
        "encoder.0.weight": (4, 6), "encoder.0.bias": (4,), "decoder.0.weight": (6, 2), "decoder.0.bias": (6,)
    }  # fmt: skip


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"input_shape": (0,)}, ValueError, r"input_shape must be positive ints.*got \(0,\)"),
        ({"input_shape": ()}, ValueError, r"input_shape.*got \(\)"),
        ({"latent_dim": 0}, ValueError, r"latent_dim must be a positive int; got 0"),
        ({"hidden": (4, -1)}, ValueError, r"hidden must be .*positive ints.*got \(4, -1\)"),
        ({"dtype": torch.int64}, TypeError, r"floating-point dtype; got torch.int64"),
    ],
)
def test_init_rejects_bad_arguments(kwargs, exc, match):
    args = {"input_shape": (4,), "latent_dim": 2, "hidden": (3,)} | kwargs
    dtype = args.pop("dtype", torch.float32)
    with pytest.raises(exc, match=match):
        vaefunc.VAE(args.pop("input_shape"), **args).init(dtype=dtype)


@given(shape=S.vae_shapes(), b=S.batch_sizes, seed=S.seeds, scale=S.scales)
def test_encode_and_decode_equal_the_module(shape, b, seed, scale):
    d, z, hidden = shape
    model = vaefunc.VAE((d,), latent_dim=z, hidden=hidden)
    params = S.scaled_params(model.init(dtype=F64), seed, scale)
    module = oracles.VAE(d, z, hidden).to(F64)
    x, zs = S.randn(seed ^ 1, b, d), S.randn(seed ^ 2, b, z)
    mu, logvar = model.encode(params, x)
    mu_ref, logvar_ref = module_encode(module, params, x)
    assert mu.shape == logvar.shape == (b, z)
    torch.testing.assert_close(mu, mu_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logvar, logvar_ref, rtol=1e-12, atol=1e-12)
    out = model.decode(params, zs)
    assert out.shape == (b, d)
    out_ref = functional_call(module.decoder, _sub(params, "decoder"), (zs,))
    torch.testing.assert_close(out, out_ref, rtol=1e-12, atol=1e-12)
    # One example without the batch axis, as vmap hands it in.
    mu0, logvar0 = model.encode(params, x[0])
    torch.testing.assert_close(mu0, mu[0], rtol=1e-12, atol=1e-12)  # mv vs mm: rounding only
    torch.testing.assert_close(logvar0, logvar[0], rtol=1e-12, atol=1e-12)


def _sub(params, prefix):
    return {k[len(prefix) + 1 :]: v for k, v in params.items() if k.startswith(prefix + ".")}


def module_encode(module, params, x):
    mu, logvar = functional_call(module.encoder, _sub(params, "encoder"), (x,)).chunk(2, dim=-1)
    return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)


@given(shape=S.vae_shapes(), b=S.batch_sizes, seed=S.seeds)
def test_encode_decode_gradients_equal_the_module_gradients(shape, b, seed):
    d, z, hidden = shape
    model = vaefunc.VAE((d,), latent_dim=z, hidden=hidden)
    params = model.init(seed, dtype=F64)
    module = oracles.VAE(d, z, hidden).to(F64)
    x, w = S.randn(seed ^ 1, b, d), S.randn(seed ^ 3, b, d)

    def f(p):  # a scalar through encode -> mean -> decode
        mu, logvar = model.encode(p, x)
        return (model.decode(p, mu + logvar.exp()) * w).sum()

    def f_module(p):
        mu, logvar = module_encode(module, p, x)
        return (functional_call(module.decoder, _sub(p, "decoder"), (mu + logvar.exp(),)) * w).sum()

    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    expected = dict(zip(leaves, torch.autograd.grad(f_module(leaves), list(leaves.values()))))
    got = grad(f)(params)
    for k in params:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-10, atol=1e-12)


def test_encode_accepts_image_shapes():
    model = vaefunc.VAE((1, 4, 4), latent_dim=3, hidden=(5,))
    params = model.init(0, dtype=F64)
    x = S.rand(0, 6, 1, 4, 4)
    mu, logvar = model.encode(params, x)
    assert mu.shape == logvar.shape == (6, 3)
    ref_mu, _ = model.encode(params, x.reshape(6, 16))
    torch.testing.assert_close(mu, ref_mu, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"expected examples with 16 features.*got a tensor of shape \(6, 15\)"):
        model.encode(params, S.rand(0, 6, 15))


def test_encode_clamps_logvar():
    model = vaefunc.VAE((2,), latent_dim=1, hidden=())
    params = model.init(0, dtype=F64)
    params["encoder.0.bias"] = torch.tensor([0.0, 1e3], dtype=F64)
    _, logvar = model.encode(params, torch.zeros(1, 2, dtype=F64))
    assert float(logvar) == LOGVAR_MAX
    params["encoder.0.bias"] = torch.tensor([0.0, -1e3], dtype=F64)
    _, logvar = model.encode(params, torch.zeros(1, 2, dtype=F64))
    assert float(logvar) == LOGVAR_MIN


@given(b=S.batch_sizes, z=S.latent_dims, seed=S.seeds)
def test_reparameterize_is_mu_plus_sigma_eps_and_broadcasts(b, z, seed):
    mu, logvar, eps = S.randn(seed, b, z), S.randn(seed ^ 1, b, z), S.randn(seed ^ 2, 3, b, z)
    out = vaefunc.VAE.reparameterize(mu, logvar, eps)  # k = 3 samples per example
    assert out.shape == (3, b, z)
    torch.testing.assert_close(out, mu + logvar.exp().sqrt() * eps, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(vaefunc.VAE.reparameterize(mu, logvar, torch.zeros_like(mu)), mu, rtol=0, atol=0)
    # d z / d logvar = 1/2 sigma eps, d z / d mu = 1.
    g_mu, g_lv = grad(lambda m, lv: vaefunc.VAE.reparameterize(m, lv, eps[0]).sum(), argnums=(0, 1))(mu, logvar)
    torch.testing.assert_close(g_mu, torch.ones_like(mu))
    torch.testing.assert_close(g_lv, 0.5 * (0.5 * logvar).exp() * eps[0])


def test_sample_is_seeded_and_pure():
    model = vaefunc.VAE((9,), latent_dim=2, hidden=(4,))
    params = model.init(0)
    rng = torch.random.get_rng_state()
    a, b = model.sample(params, 5, seed=3), model.sample(params, 5, seed=3)
    assert torch.equal(torch.random.get_rng_state(), rng)  # the global RNG is untouched
    assert a.shape == (5, 9) and torch.equal(a, b)
    assert bool(((a > 0) & (a < 1)).all())  # probabilities
    assert not torch.equal(a, model.sample(params, 5, seed=4))
    z = torch.randn(5, 2, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, torch.sigmoid(model.decode(params, z)), rtol=0, atol=0)
    gaussian = vaefunc.VAE((9,), latent_dim=2, hidden=(4,), likelihood="gaussian")
    torch.testing.assert_close(gaussian.sample(params, 5, seed=3), model.decode(params, z))
    assert vaefunc.VAE((1, 3, 3), latent_dim=2, hidden=(4,)).sample(params, 5, seed=3).shape == (5, 1, 3, 3)


@pytest.mark.parametrize(
    "n, likelihood, match",
    [
        (0, "bernoulli", r"n must be a positive int; got 0"),
        (2.0, "bernoulli", r"n must be a positive int; got 2.0"),
        (2, "poisson", r"likelihood must be one of \('bernoulli', 'gaussian', 'continuous_bernoulli'\); got 'poisson'"),
    ],
)
def test_sample_rejects_bad_arguments(n, likelihood, match):
    with pytest.raises(ValueError, match=match):
        vaefunc.VAE((4,), latent_dim=2, hidden=(), likelihood=likelihood).sample(vaefunc.VAE((4,), latent_dim=2, hidden=()).init(), n)


# ---------------------------------------------------------------- the hidden activation


def _hand_written_mlp(params, prefix, h, act):
    """Linear layers of ``prefix`` (at even indices), act between them, none after the last: x @ W^T + b."""
    n = len([k for k in params if k.startswith(prefix + ".") and k.endswith(".weight")])
    for i in range(n):
        h = h @ params[f"{prefix}.{2 * i}.weight"].T + params[f"{prefix}.{2 * i}.bias"]
        if i < n - 1:
            h = act(h)
    return h


def test_tanh_encode_decode_and_sample_equal_a_hand_written_tanh_mlp():
    model = vaefunc.VAE((12,), latent_dim=3, hidden=(7, 5))
    tanh = vaefunc.VAE((12,), latent_dim=3, hidden=(7, 5), activation="tanh")
    params = model.init(1, dtype=F64)
    g = torch.Generator().manual_seed(0)
    x, z = torch.rand(6, 12, generator=g, dtype=F64), torch.randn(6, 3, generator=g, dtype=F64)
    mu_ref, logvar_ref = _hand_written_mlp(params, "encoder", x, torch.tanh).chunk(2, dim=-1)
    mu, logvar = tanh.encode(params, x)
    torch.testing.assert_close(mu, mu_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logvar, logvar_ref.clamp(LOGVAR_MIN, LOGVAR_MAX), rtol=1e-12, atol=1e-12)
    logits_ref = _hand_written_mlp(params, "decoder", z, torch.tanh)
    torch.testing.assert_close(tanh.decode(params, z), logits_ref, rtol=1e-12, atol=1e-12)
    # sample decodes its prior draws with the activation it is given
    z5 = torch.randn(5, 3, generator=torch.Generator().manual_seed(3), dtype=F64)
    expected = torch.sigmoid(_hand_written_mlp(params, "decoder", z5, torch.tanh))
    torch.testing.assert_close(tanh.sample(params, 5, seed=3), expected, rtol=1e-12, atol=1e-12)
    # ReLU is the default, and the negative control: the hand-written ReLU net is not the tanh one
    relu_mu = _hand_written_mlp(params, "encoder", x, torch.relu).chunk(2, dim=-1)[0]
    torch.testing.assert_close(model.encode(params, x)[0], relu_mu, rtol=1e-12, atol=1e-12)
    assert model.activation == "relu"
    assert not torch.allclose(relu_mu, mu)


def test_every_activation_is_its_torch_function_between_the_layers():
    from vaefunc.model import ACTIVATIONS

    fns = {"relu": torch.relu, "tanh": torch.tanh, "elu": torch.nn.functional.elu,
           "softplus": torch.nn.functional.softplus, "gelu": torch.nn.functional.gelu,
           "silu": torch.nn.functional.silu}  # fmt: skip
    assert set(ACTIVATIONS) == set(fns)
    params = vaefunc.VAE((6,), latent_dim=2, hidden=(4,)).init(0, dtype=F64)
    z = torch.randn(3, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    outs = {}
    for name, fn in fns.items():
        outs[name] = vaefunc.VAE((6,), latent_dim=2, hidden=(4,), activation=name).decode(params, z)
        torch.testing.assert_close(outs[name], _hand_written_mlp(params, "decoder", z, fn), rtol=1e-12, atol=1e-12)
    assert len({tuple(o.flatten().tolist()) for o in outs.values()}) == len(fns)  # all six differ
