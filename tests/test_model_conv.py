"""The convolutional VAE: shapes, layout, init and gradients against nn.Module twins."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call, grad, vmap

import vaefunc
from equivalent_modules import EquivalentVAE, loaded
from vaefunc.losses import example_terms, make_elbo_loss
from vaefunc.layout import architecture
from vaefunc.optim import adam
from vaefunc.step import make_step

F64 = torch.float64


@pytest.mark.parametrize(
    "shape, feature_shape, n_conv",
    [((1, 28, 28), (32, 7, 7), 2), ((1, 64, 64), (64, 4, 4), 4), ((3, 32, 32), (64, 4, 4), 3)],
)
def test_conv_shapes(shape, feature_shape, n_conv):
    model = vaefunc.VAE(shape, latent_dim=5, hidden=(16,), arch="conv")
    params = model.init(0)
    a = architecture(params)
    assert (a.arch, a.input_shape, a.feature_shape, a.latent_dim, a.n_classes) == ("conv", shape, feature_shape, 5, 0)
    assert len(a.enc_conv) == len(a.dec_conv) == n_conv
    x = torch.rand(3, *shape)
    mu, logvar = model.encode(params, x)
    assert mu.shape == logvar.shape == (3, 5)
    # the flat and the image layout of the same data encode alike
    torch.testing.assert_close(model.encode(params, x.flatten(1))[0], mu, rtol=0, atol=0)
    assert model.decode(params, mu).shape == (3, *shape)
    assert model.decode(params, torch.randn(2, 3, 5)).shape == (2, 3, *shape)
    assert model.encode(params, x[0])[0].shape == (5,)  # one example, as vmap hands it in
    assert model.sample(params, 4).shape == (4, *shape)
    assert model.decode(params, mu).flatten(1).shape == (3, x[0].numel())


def test_conv_keys_and_init_match_the_equivalent_module():
    params = vaefunc.VAE((1, 28, 28), latent_dim=4, hidden=(32,), arch="conv", channels=(4, 8)).init(3)
    # encoder: Conv, ReLU, Conv, ReLU, Flatten, Linear, ReLU, Linear
    # decoder: Linear, ReLU, Linear, ReLU, Unflatten, ConvTranspose, ReLU, ConvTranspose
    idx = (0, 2, 5, 7)
    expected = [f"{m}.{i}.{p}" for m in ("encoder", "decoder") for i in idx for p in ("weight", "bias")]
    assert sorted(params) == sorted(expected)
    # Built in the same order from the global RNG seeded alike, torch's layers draw the same numbers.
    torch.manual_seed(3)
    ref = EquivalentVAE(params).state_dict()
    assert list(ref) == [k for k in ref if k in params] and set(ref) == set(params)
    for k, v in params.items():
        torch.testing.assert_close(v, ref[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 64, 64)])
def test_conv_outputs_and_gradients_match_the_module(shape):
    model = vaefunc.VAE(shape, latent_dim=3, hidden=(8,), arch="conv", channels=(2, 3))
    params = model.init(1, dtype=F64)
    vae = loaded(params)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, *shape, generator=gen, dtype=F64)
    eps = torch.randn(4, 3, generator=gen, dtype=F64)
    mu, logvar = model.encode(params, x)
    mu_ref, logvar_ref = vae.encode(x)
    torch.testing.assert_close(mu, mu_ref)
    torch.testing.assert_close(logvar, logvar_ref)
    torch.testing.assert_close(model.decode(params, mu), vae.decode(mu))
    torch.testing.assert_close(model.elbo(params, x, eps), vae(x, eps))
    g = grad(lambda p: model.elbo(p, x, eps).sum())(params)
    g_ref = grad(lambda p: functional_call(vae, p, (x, eps)).sum())(params)
    for k in params:
        torch.testing.assert_close(g[k], g_ref[k], msg=k)


@pytest.mark.parametrize("n_classes", [None, 3])
def test_conv_with_tanh_applies_it_after_every_hidden_layer_as_the_module_does(n_classes):
    """The activation is every hidden layer's, convolutions included (the twin holds nn.Tanh everywhere)."""
    model = vaefunc.VAE((1, 8, 8), latent_dim=2, hidden=(5,), arch="conv", channels=(2, 3), n_classes=n_classes,
                        activation="tanh")  # fmt: skip
    params = model.init(1, dtype=F64)
    vae = loaded(params, "tanh")
    gen = torch.Generator().manual_seed(0)
    x, eps = torch.rand(4, 1, 8, 8, generator=gen, dtype=F64), torch.randn(4, 2, generator=gen, dtype=F64)
    y = None if n_classes is None else torch.tensor([0, 2, 1, 2])
    onehot = None if y is None else torch.nn.functional.one_hot(y, 3).to(F64)
    mu, logvar = model.encode(params, x, y)
    mu_ref, logvar_ref = vae.encode(x, onehot)
    torch.testing.assert_close(mu, mu_ref)
    torch.testing.assert_close(logvar, logvar_ref)
    torch.testing.assert_close(model.decode(params, mu, y), vae.decode(mu, onehot))
    torch.testing.assert_close(model.elbo(params, x, eps, y), vae(x, eps, onehot))
    g = grad(lambda p: model.elbo(p, x, eps, y).sum())(params)
    g_ref = grad(lambda p: functional_call(vae, p, (x, eps, onehot)).sum())(params)
    for k in params:
        torch.testing.assert_close(g[k], g_ref[k], msg=k)
    # negative control: the ReLU twin is a different function of the same params
    assert not torch.allclose(loaded(params).encode(x, onehot)[0], mu)


def test_conv_per_example_gradients_vmap_equal_a_loop():
    model = vaefunc.VAE((1, 28, 28), latent_dim=2, hidden=(), arch="conv", channels=(2,))
    params = model.init(0, dtype=F64)
    gen = torch.Generator().manual_seed(1)
    x, eps = torch.rand(3, 1, 28, 28, generator=gen, dtype=F64), torch.randn(3, 2, generator=gen, dtype=F64)

    def single(p, x, eps):
        rec, kl = example_terms(model, p, x, eps)
        return rec - kl

    batched = vmap(grad(single), in_dims=(None, 0, 0))(params, x, eps)
    for i in range(3):
        one = grad(single)(params, x[i], eps[i])
        for k in params:
            torch.testing.assert_close(batched[k][i], one[k], msg=k)


def test_conv_gradcheck_float64():
    model = vaefunc.VAE((1, 8, 8), latent_dim=2, hidden=(), arch="conv", channels=(2,))
    params = model.init(0, dtype=F64)
    x, eps = torch.rand(2, 1, 8, 8, dtype=F64), torch.randn(2, 2, dtype=F64)
    keys = sorted(params)

    def f(*leaves):
        return model.elbo(dict(zip(keys, leaves)), x, eps)

    leaves = tuple(params[k].clone().requires_grad_() for k in keys)
    assert torch.autograd.gradcheck(f, leaves)


@pytest.mark.compile
# Inductor imports a torch module that uses the deprecated torch.jit.script_method (torch's warning, not ours).
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_tiny_conditional_conv_step_compiles_whole_and_matches_eager():
    """The one compile test: a tiny conditional conv model, fullgraph, no recompile, == eager. The
    trace meets an empty spec cache, which the eager call then fills: no guard reads the cache."""
    from vaefunc import _resolve as _spec

    torch._dynamo.reset()
    _spec._SPECS.clear()
    params = vaefunc.VAE((1, 8, 8), latent_dim=2, hidden=(4,), arch="conv", channels=(2,), n_classes=3).init(0)
    opt = adam(1e-3)
    step = make_step(make_elbo_loss(), opt)
    gen = torch.Generator().manual_seed(0)
    x, eps = torch.rand(4, 64, generator=gen), torch.randn(4, 2, generator=gen)
    y = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 1]), 3).float()
    beta = torch.tensor(1.0)
    state = opt.init(params)
    compiled = torch.compile(step, fullgraph=True)
    p_c, s_c, m_c = compiled(params, state, x, eps, beta, y=y)
    p_e, s_e, m_e = step(params, state, x, eps, beta, y=y)
    torch.testing.assert_close(m_c["loss"], m_e["loss"])
    for k in params:
        torch.testing.assert_close(p_c[k], p_e[k], atol=1e-4, rtol=1e-4, msg=k)
    with torch.compiler.set_stance("fail_on_recompile"):  # new values of beta and y: the same graph
        compiled(p_c, s_c, x, eps, beta * 2, y=y.flip(0))


def test_train_runs_a_conv_model_and_lowers_its_loss():
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(64, 1, 8, 8, generator=gen) > 0.5).float() * torch.tensor([1.0] * 4 + [0.0] * 4).view(1, 1, 1, 8)
    params = vaefunc.VAE((1, 8, 8), latent_dim=2, hidden=(16,), arch="conv", channels=(4,)).init(0)
    result = vaefunc.train(params, x, epochs=8, batch_size=16, lr=1e-2, compile=False, progress=False)
    assert result.history[-1]["loss"] < result.history[0]["loss"] - 5.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"input_shape": (1, 28, 32)}, "square"),
        ({"input_shape": (784,)}, "square"),
        ({"input_shape": (1, 7, 7)}, "even image size"),
        ({"input_shape": (1, 28, 28), "channels": (8, 8, 8)}, "divisible by 8"),
        ({"input_shape": (1, 28, 28), "channels": ()}, "non-empty"),
        ({"input_shape": (784,), "channels": (8,), "arch": "mlp"}, "arch='conv' only"),
        ({"input_shape": (1, 28, 28), "arch": "resnet"}, "arch must be one of"),
    ],
)
def test_conv_bad_init_arguments(kwargs, match):
    kwargs = {"arch": "conv", **kwargs}
    with pytest.raises(ValueError, match=match):
        vaefunc.VAE(kwargs.pop("input_shape"), **kwargs).init()


def test_architecture_names_the_layer_that_does_not_fit():
    params = vaefunc.VAE((1, 28, 28), latent_dim=2, hidden=(8,), arch="conv", channels=(2, 4)).init(0)
    bad = dict(params) | {"encoder.2.weight": torch.zeros(4, 3, 4, 4)}
    msg = r"encoder\.2: expected weight \(out, 2, k, k\) and bias \(out,\); got weight \(4, 3, 4, 4\)"
    with pytest.raises(ValueError, match=msg):
        architecture(bad)
    bad = dict(params) | {"decoder.7.weight": torch.zeros(2, 3, 4, 4), "decoder.7.bias": torch.zeros(3)}
    with pytest.raises(ValueError, match="output the 1 channels"):
        architecture(bad)
    bad = {k: v for k, v in params.items() if k != "decoder.5.bias"}
    with pytest.raises(ValueError, match="decoder.5.bias"):
        architecture(bad)


@pytest.mark.parametrize(
    "shape, kwargs", [((784,), {"hidden": (400,)}), ((1, 64, 64), {"arch": "conv"}), ((1, 28, 28), {"arch": "conv"})]
)
def test_macs_per_example_match_torch_flop_counter(shape, kwargs):
    """The estimate behind compile="auto" counts what torch's own FLOP counter counts."""
    from torch.utils.flop_counter import FlopCounterMode

    model = vaefunc.VAE(shape, latent_dim=10, **kwargs)
    params = model.init()
    with FlopCounterMode(display=False) as counter:
        model.decode(params, model.encode(params, torch.rand(1, *shape))[0])
    assert model.macs_per_example() == counter.get_total_flops() // 2


def test_images_in_any_layout_and_bad_shapes():
    model = vaefunc.VAE((1, 28, 28), latent_dim=3, hidden=(), arch="conv", channels=(2,))
    params = model.init(0)
    x = torch.rand(4, 1, 28, 28)
    mu = model.encode(params, x)[0]
    for layout in (x.flatten(1), x[:, 0]):
        torch.testing.assert_close(model.encode(params, layout)[0], mu, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"expected images \(\.\.\., 1, 28, 28\) or flat \(\.\.\., 784\)"):
        model.encode(params, torch.rand(4, 700))


def test_odd_kernels_are_rejected():
    params = vaefunc.VAE((1, 8, 8), latent_dim=2, hidden=(), arch="conv", channels=(2,)).init(0)
    bad = dict(params) | {"encoder.0.weight": torch.zeros(2, 1, 3, 3)}
    with pytest.raises(ValueError, match=r"square, even conv kernel \(k, k\); got \(3, 3\)"):
        architecture(bad)


def test_to_module_refuses_conv_and_conditional_params():
    with pytest.raises(ValueError, match="unconditional MLP VAEs only; got conv"):
        vaefunc.to_module(vaefunc.VAE((1, 8, 8), latent_dim=2, arch="conv", channels=(2,)).init())
    with pytest.raises(ValueError, match=r"got conditional \(3 classes\)"):
        vaefunc.to_module(vaefunc.VAE((8,), latent_dim=2, n_classes=3).init())


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_encode_and_decode_work_on_their_half_of_the_params(arch):
    model = vaefunc.VAE((1, 8, 8), latent_dim=3, hidden=(5,), arch=arch)
    params = model.init(0)
    enc = {k: v for k, v in params.items() if k.startswith("encoder.")}
    dec = {k: v for k, v in params.items() if k.startswith("decoder.")}
    x, z = torch.rand(2, 1, 8, 8), torch.randn(2, 3)
    torch.testing.assert_close(model.encode(enc, x)[0], model.encode(params, x)[0], rtol=0, atol=0)
    torch.testing.assert_close(model.decode(dec, z), model.decode(params, z), rtol=0, atol=0)
    assert architecture(enc).input_shape == architecture(dec).input_shape == architecture(params).input_shape


def test_conv_params_work_with_the_importance_weighted_estimators():
    model = vaefunc.VAE((1, 8, 8), latent_dim=2, hidden=(4,), arch="conv", channels=(2,))
    params = model.init(0, dtype=F64)
    x = torch.bernoulli(torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=F64))
    eps = torch.randn(1, 3, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    # k = 1: the bound is the single-sample ELBO with the Monte Carlo KL
    torch.testing.assert_close(model.iwae(params, x, eps), model.elbo(params, x, eps[0], kl="mc"))
    assert model.log_likelihood(params, x, k=20).shape == (3,)
    result = vaefunc.train(params, x.flatten(1), objective="iwae", k=3, epochs=1, batch_size=3, progress=False)
    assert result.history[0]["loss"] > 0
    cond = vaefunc.VAE((8,), latent_dim=2, hidden=(), n_classes=2).init()  # the IWAE objective takes labels too
    with pytest.raises(ValueError, match="pass labels="):
        vaefunc.train(cond, torch.rand(4, 8), objective="iwae", epochs=1, batch_size=2, progress=False)
    run = vaefunc.train(cond, torch.rand(4, 8), labels=[0, 1, 0, 1], objective="iwae", k=2, epochs=1, batch_size=2,
                        progress=False)  # fmt: skip
    assert math.isfinite(run.history[0]["loss"])
