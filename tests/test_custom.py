"""VAE.custom: your own networks as pure functions of params (vaefunc.custom)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import grad

import vaefunc
from vaefunc.custom import Network

F64 = torch.float64


def mlp_modules(d=12, h=8, z=3):
    """nn.Sequential twins of the built-in 784-400-20-style MLP's encoder and decoder."""
    enc = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, 2 * z))
    dec = nn.Sequential(nn.Linear(z, h), nn.ReLU(), nn.Linear(h, d))
    return enc, dec


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
        self.norm = nn.GroupNorm(1, c)

    def forward(self, x):
        return x + self.conv2(torch.relu(self.norm(self.conv1(x))))


class ConvEncoder(nn.Module):
    """(b, 3, 8, 8) -> (mu, logvar), each (b, z)."""

    def __init__(self, z=4, c=8):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 4, stride=2, padding=1)
        self.block = ResBlock(c)
        self.head = nn.Linear(c * 4 * 4, 2 * z)

    def forward(self, x):
        mu, logvar = self.head(self.block(torch.relu(self.stem(x))).flatten(1)).chunk(2, dim=-1)
        return mu, logvar


class ConvDecoder(nn.Module):
    """(b, z) -> logits (b, 3, 8, 8)."""

    def __init__(self, z=4, c=8):
        super().__init__()
        self.fc = nn.Linear(z, c * 4 * 4)
        self.block = ResBlock(c)
        self.up = nn.ConvTranspose2d(c, 3, 4, stride=2, padding=1)
        self.c = c

    def forward(self, z):
        return self.up(self.block(torch.relu(self.fc(z)).unflatten(1, (self.c, 4, 4))))


def conv_model(**fields):
    return vaefunc.VAE.custom(encoder=ConvEncoder(), decoder=ConvDecoder(), input_shape=(3, 8, 8), latent_dim=4,
                              **fields)  # fmt: skip


def test_a_custom_mlp_equals_the_built_in_one_bit_for_bit():
    """The same function with the same params: every bound, the gradients and a training run agree exactly."""
    builtin = vaefunc.VAE((12,), latent_dim=3, hidden=(8,))
    model = vaefunc.VAE.custom(encoder=mlp_modules()[0], decoder=mlp_modules()[1], input_shape=(12,), latent_dim=3)
    params = builtin.init(seed=0)
    assert set(params) == set(model.param_shapes())  # nn.Sequential's keys are the built-in layout
    g = torch.Generator().manual_seed(0)
    x, eps, eps_k = torch.rand(6, 12, generator=g), torch.randn(6, 3, generator=g), torch.randn(4, 6, 3, generator=g)
    for method, args in (("elbo", (x, eps)), ("iwae", (x, eps_k)), ("log_weights", (x, eps_k))):
        torch.testing.assert_close(getattr(model, method)(params, *args), getattr(builtin, method)(params, *args),
                                   rtol=0, atol=0)  # fmt: skip
    loss = lambda m: lambda p: -m.elbo(p, x, eps).mean()  # noqa: E731
    for k, v in grad(loss(model))(params).items():
        torch.testing.assert_close(v, grad(loss(builtin))(params)[k], rtol=0, atol=0)
    runs = [vaefunc.train(params, torch.rand(64, 12, generator=torch.Generator().manual_seed(1)), model=m,
                          epochs=2, batch_size=16, compile=False, progress=False) for m in (model, builtin)]  # fmt: skip
    for k in params:
        torch.testing.assert_close(runs[0].params[k], runs[1].params[k], rtol=0, atol=0)
    assert model.macs_per_example() == builtin.macs_per_example()


def test_a_custom_conv_model_trains_as_an_ensemble_and_estimates_its_nll():
    model = conv_model(likelihood="gaussian")
    x = torch.rand(48, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    params = vaefunc.stack([model.init(seed=s) for s in range(2)])
    result = vaefunc.train_many(params, x, model=model, epochs=2, batch_size=16, seed=(0, 1), compile=False,
                                progress=False)  # fmt: skip
    members = vaefunc.unstack(result.params)
    assert not torch.equal(members[0]["encoder.stem.weight"], members[1]["encoder.stem.weight"])
    lone = vaefunc.train(model.init(seed=1), x, model=model, epochs=2, batch_size=16, seed=1, compile=False,
                         progress=False)  # fmt: skip
    for k, v in lone.params.items():  # member 1 is its lone run (vmap over the members)
        torch.testing.assert_close(members[1][k], v, rtol=1e-5, atol=1e-6)
    ll = model.log_likelihood(members[0], x[:5], k=20, progress=False)
    assert ll.shape == (5,) and torch.isfinite(ll).all()
    assert model.sample(members[0], 3).shape == (3, 3, 8, 8)


def test_init_is_seeded_and_independent_of_the_global_rng():
    model = conv_model()
    a = model.init(seed=3)
    torch.manual_seed(123)
    b = model.init(seed=3)
    c = model.init(seed=4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["encoder.stem.weight"], c["encoder.stem.weight"])
    assert not torch.equal(a["encoder.head.weight"].flatten()[:8], a["decoder.fc.weight"].flatten()[:8])
    assert model.init(seed=0, dtype=F64)["decoder.up.bias"].dtype == F64


def test_a_pure_function_network_with_its_params():
    g = torch.Generator().manual_seed(0)
    enc_params = {"w": torch.randn(6, 12, generator=g) * 0.1, "b": torch.zeros(6)}
    dec_params = {"w": torch.randn(12, 3, generator=g) * 0.1, "b": torch.zeros(12)}
    affine = lambda p, x: x @ p["w"].T + p["b"]  # noqa: E731
    model = vaefunc.VAE.custom(encoder=(affine, enc_params), decoder=(affine, dec_params), input_shape=(12,),
                               latent_dim=3)  # fmt: skip
    params = model.init(seed=0)
    assert sorted(params) == ["decoder.b", "decoder.w", "encoder.b", "encoder.w"]
    x = torch.rand(32, 12, generator=g)
    result = vaefunc.train(params, x, model=model, epochs=2, batch_size=8, compile=False, progress=False)
    assert result.history[-1]["loss"] < result.history[0]["loss"] + 1.0
    seeded = vaefunc.VAE.custom(encoder=(affine, lambda seed: {"w": torch.full((6, 12), float(seed)),
                                                               "b": torch.zeros(6)}),
                                decoder=(affine, dec_params), input_shape=(12,), latent_dim=3)  # fmt: skip
    assert float(seeded.init(seed=0)["encoder.w"][0, 0]) != float(seeded.init(seed=1)["encoder.w"][0, 0])


class Conditional(nn.Module):
    def __init__(self, d_in, d_out, n):
        super().__init__()
        self.net = nn.Linear(d_in + n, d_out)

    def forward(self, x, y):
        return self.net(torch.cat([x, y], dim=-1))


def test_conditional_and_semi_supervised_custom_models_take_the_label_as_the_built_in_ones_do():
    n = 3
    model = vaefunc.VAE.custom(encoder=Conditional(12, 4, n), decoder=Conditional(2, 12, n), input_shape=(12,),
                               latent_dim=2, n_classes=n)  # fmt: skip
    builtin = vaefunc.VAE((12,), latent_dim=2, hidden=(), n_classes=n)
    custom_params = model.init(seed=0)  # {"encoder.net.weight": ...}: one linear layer on [input, one-hot y]
    params = {k.replace(".net.", ".0."): v for k, v in custom_params.items()}
    x, y, eps = torch.rand(5, 12), torch.tensor([0, 1, 2, 0, 1]), torch.randn(5, 2)
    torch.testing.assert_close(model.elbo(custom_params, x, eps, y), builtin.elbo(params, x, eps, y), rtol=0, atol=0)
    with pytest.raises(ValueError, match="pass labels"):
        model.elbo(custom_params, x, eps)
    m2 = vaefunc.VAE.custom(encoder=Conditional(12, 4, n), decoder=Conditional(2, 12, n), input_shape=(12,),
                            latent_dim=2, n_classes=n, semi_supervised=True,
                            classifier=nn.Sequential(nn.Linear(12, n)))  # fmt: skip
    p2 = m2.init(seed=0)
    assert m2.classify(p2, x).shape == (5, n)
    labels = torch.tensor([0, 1, 2, -1, -1, -1, -1, -1] * 4)
    result = vaefunc.train(p2, torch.rand(32, 12), model=m2, labels=labels, epochs=1, batch_size=8, compile=False,
                           progress=False)  # fmt: skip
    assert torch.isfinite(torch.tensor(result.history[-1]["loss"]))
    with pytest.raises(ValueError, match="needs a classifier"):
        vaefunc.VAE.custom(encoder=Conditional(12, 4, n), decoder=Conditional(2, 12, n), input_shape=(12,),
                           latent_dim=2, n_classes=n, semi_supervised=True)  # fmt: skip


def test_a_custom_checkpoint_takes_its_networks_back_from_the_caller(tmp_path):
    model = conv_model()
    params = model.init(seed=0)
    path = vaefunc.save(tmp_path / "c.safetensors", params, model=model)
    with pytest.raises(vaefunc.CheckpointError, match=r"custom networks .*ConvEncoder.*pass the spec"):
        vaefunc.load(path)
    ckpt = vaefunc.load(path, model=model)
    assert ckpt.model == model and all(torch.equal(ckpt.params[k], params[k]) for k in params)
    with pytest.raises(vaefunc.CheckpointError, match="likelihood"):
        vaefunc.load(path, model=conv_model(likelihood="gaussian"))
    other = vaefunc.VAE.custom(encoder=ConvEncoder(z=5), decoder=ConvDecoder(z=5), input_shape=(3, 8, 8),
                               latent_dim=5)  # fmt: skip
    with pytest.raises(vaefunc.CheckpointError, match="latent_dim"):
        vaefunc.load(path, model=other)
    assert model.to_dict()["encoder"] == {"custom": "ConvEncoder"}  # the name, never code


class Doubles(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(12, 6)

    def forward(self, x):
        return self.lin(x).double()


class NoParams(nn.Module):
    def forward(self, x):
        return x[:, :6]


class WithBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(12, 6)
        self.register_buffer("scale", torch.ones(6))

    def forward(self, x):
        return self.lin(x) * self.scale


@pytest.mark.parametrize("encoder, error, match", [
    (nn.Linear(12, 3), ValueError, r"the encoder Linear must return shape \(2, 6\).*got \(2, 3\)"),
    (Doubles(), TypeError, "the encoder Doubles must return the dtype of its input.*float64"),
    (NoParams(), ValueError, "the encoder NoParams has no parameters"),
    (WithBuffer(), ValueError, r"the encoder WithBuffer has buffers \['scale'\]"),
    (nn.Sequential(nn.Linear(12, 6), nn.BatchNorm1d(6)), ValueError, "submodule '1', BatchNorm1d.*batch normalization"),
    (nn.Sequential(nn.Linear(12, 6), nn.Dropout(0.5)), ValueError, "active dropout.*module.eval"),
    (nn.Linear(10, 6), ValueError, r"the encoder Linear failed when called as encoder\(x\) with x of shape \(2, 12\)"),
    ("linear", TypeError, "encoder must be a torch.nn.Module or a pair"),
])  # fmt: skip
def test_bad_custom_networks_are_named(encoder, error, match):
    with pytest.raises(error, match=match):
        vaefunc.VAE.custom(encoder=encoder, decoder=nn.Linear(3, 12), input_shape=(12,), latent_dim=3)


def test_bad_custom_decoders_and_fields_are_named():
    with pytest.raises(ValueError, match=r"the decoder Linear must return shape \(2, 12\) or \(2, 3, 2, 2\).*\(2, 7\)"):
        vaefunc.VAE.custom(encoder=nn.Sequential(nn.Flatten(), nn.Linear(12, 6)), decoder=nn.Linear(3, 7),
                           input_shape=(3, 2, 2), latent_dim=3)  # fmt: skip
    with pytest.raises(TypeError, match=r"\['hidden'\] are for the built-in ones"):
        vaefunc.VAE.custom(encoder=nn.Linear(12, 6), decoder=nn.Linear(3, 12), input_shape=(12,), latent_dim=3,
                           hidden=(8,))  # fmt: skip
    with pytest.raises(ValueError, match="need arch='custom'"):
        vaefunc.VAE((12,), encoder=Network(lambda p, x: x, lambda s: {}, {}, "f"))


def test_a_custom_spec_is_hashable_and_deeper_latents_compose_with_it():
    enc, dec = mlp_modules()
    a = vaefunc.VAE.custom(encoder=enc, decoder=dec, input_shape=(12,), latent_dim=3, top_latent_dim=2,
                           posterior="iaf")  # fmt: skip
    b = vaefunc.VAE.custom(encoder=enc, decoder=dec, input_shape=(12,), latent_dim=3, top_latent_dim=2,
                           posterior="iaf")  # fmt: skip
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    params = a.init(seed=0)
    x, eps = torch.rand(4, 12), torch.randn(6, 4, a.noise_dim)
    torch.testing.assert_close(a.iwae(params, x, eps[:1]), a.elbo(params, x, eps[0], kl="mc"))


# Inductor's own import of torch.jit warns on torch 2.13; that is torch's, not ours.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.compile
@pytest.mark.slow
def test_a_custom_module_step_compiles_without_graph_breaks():
    torch._dynamo.reset()
    enc, dec = mlp_modules(d=16, h=8, z=2)
    model = vaefunc.VAE.custom(encoder=enc, decoder=dec, input_shape=(16,), latent_dim=2)
    params = model.init(seed=0)
    opt = vaefunc.adam(1e-3)
    step = vaefunc.make_step(model.loss(), opt)
    opt_state = opt.init(params)
    x, eps, one = torch.rand(32, 16), torch.randn(32, 2), torch.tensor(1.0)
    explain = torch._dynamo.explain(step)(params, opt_state, x, eps, one, torch.tensor(0.0))
    assert explain.graph_break_count == 0, explain.break_reasons


class Tied(nn.Module):
    """A decoder whose last two layers share one weight: one parameter, two uses."""

    def __init__(self, z=3, d=12):
        super().__init__()
        self.inp = nn.Linear(z, d)
        self.shared = nn.Linear(d, d, bias=False)
        self.again = nn.Linear(d, d, bias=False)
        self.again.weight = self.shared.weight  # tied

    def forward(self, z):
        return self.again(torch.tanh(self.shared(torch.tanh(self.inp(z)))))


def test_tied_weights_stay_tied():
    model = vaefunc.VAE.custom(encoder=nn.Linear(12, 6), decoder=Tied(), input_shape=(12,), latent_dim=3)
    params = model.init(seed=0)
    assert "decoder.shared.weight" in params and "decoder.again.weight" not in params  # listed once
    doubled = params | {"decoder.shared.weight": 2 * params["decoder.shared.weight"]}
    z = torch.randn(4, 3)
    dec = lambda p: torch.tanh(p["decoder.inp.weight"] @ z.T + p["decoder.inp.bias"][:, None]).T  # noqa: E731
    w = doubled["decoder.shared.weight"]
    expected = torch.tanh(dec(doubled) @ w.T) @ w.T  # both uses read the new value
    torch.testing.assert_close(model.decode(doubled, z), expected)
