"""The conditional VAE: the label feeds encoder and decoder; train batches it with the data."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad

import vaefunc
from equivalent_modules import loaded
from vaefunc.losses import example_terms
from vaefunc.model import architecture
from vaefunc.optim import adam
from vaefunc.rng import make_streams
from vaefunc.step import make_step

F64 = torch.float64


@pytest.mark.parametrize(
    "shape, kwargs", [((784,), {"hidden": (16,)}), ((1, 28, 28), {"hidden": (16,), "arch": "conv", "channels": (2, 4)})]
)
def test_n_classes_is_read_back_from_shapes_and_labels_change_the_output(shape, kwargs):
    model = vaefunc.VAE(shape, latent_dim=3, n_classes=10, **kwargs)
    params = model.init(0)
    a = architecture(params)
    assert (a.input_shape, a.latent_dim, a.n_classes) == (shape, 3, 10)
    x, y = torch.rand(4, *shape), torch.tensor([0, 3, 3, 9])
    mu, logvar = model.encode(params, x, y)
    assert mu.shape == (4, 3)
    # int labels and one-hot rows are the same input
    torch.testing.assert_close(model.encode(params, x, F.one_hot(y, 10).float())[0], mu, rtol=0, atol=0)
    out = model.decode(params, mu, y)
    assert out.shape == (4, *shape)
    assert not torch.equal(model.decode(params, mu, (y + 1) % 10), out)
    assert not torch.equal(model.encode(params, x, (y + 1) % 10)[0], mu)
    assert model.decode(params, torch.randn(5, 4, 3), y).shape == (5, 4, *shape)  # y broadcasts over k


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_conditional_elbo_and_gradients_match_the_module(arch):
    kw = {"arch": "conv", "channels": (2,)} if arch == "conv" else {}
    shape = (1, 8, 8) if arch == "conv" else (64,)
    model = vaefunc.VAE(shape, latent_dim=2, hidden=(5,), n_classes=4, **kw)
    params = model.init(2, dtype=F64)
    vae = loaded(params)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, *shape, generator=gen, dtype=F64)
    eps = torch.randn(6, 2, generator=gen, dtype=F64)
    y = torch.tensor([0, 1, 2, 3, 2, 1])
    onehot = F.one_hot(y, 4).to(F64)
    torch.testing.assert_close(model.elbo(params, x, eps, y), vae(x, eps, onehot))
    g = grad(lambda p: model.elbo(p, x, eps, y).sum())(params)
    g_ref = grad(lambda p: functional_call(vae, p, (x, eps, onehot)).sum())(params)
    for k in params:
        torch.testing.assert_close(g[k], g_ref[k], msg=k)
    # vmap over (x, eps, y) agrees with one example at a time
    for i in range(6):
        rec, kl = example_terms(model, params, x[i], eps[i], y[i])
        torch.testing.assert_close(rec - kl, model.elbo(params, x[i : i + 1], eps[i : i + 1], y[i : i + 1])[0])


def test_missing_or_unexpected_labels_are_errors():
    model = vaefunc.VAE((16,), latent_dim=2, hidden=(), n_classes=3)
    cond = model.init()
    spec = vaefunc.VAE((16,), latent_dim=2, hidden=())
    plain = spec.init()
    x = torch.rand(2, 16)
    with pytest.raises(ValueError, match="conditional on 3 classes"):
        model.encode(cond, x)
    with pytest.raises(ValueError, match="unconditional"):
        spec.decode(plain, torch.zeros(2, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"one-hot rows \(\.\.\., 3\)"):
        model.encode(cond, x, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="pass labels="):
        vaefunc.train(cond, x, epochs=1, batch_size=2, progress=False)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        vaefunc.train(cond, x, labels=torch.tensor([0, 3]), epochs=1, batch_size=2, progress=False)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        vaefunc.train(cond, x, labels=torch.tensor([0, 1, 2]), epochs=1, batch_size=2, progress=False)
    with pytest.raises(TypeError, match="labels must be"):
        vaefunc.train(cond, x, labels="cats", epochs=1, batch_size=2, progress=False)
    with pytest.raises(ValueError, match="unconditional"):
        vaefunc.train(plain, x, labels=[0, 1], epochs=1, batch_size=2, progress=False)
    with pytest.raises(ValueError, match="n_classes must be"):
        vaefunc.VAE((16,), n_classes=-1).init()


def test_iwae_checks_its_labels_once_and_the_method_maps_over_them():
    """iwae(): missing, unexpected and out-of-range labels are refused; VAE.iwae under vmap over the
    labels equals one call per label (the value checks stand aside under the transform)."""
    spec = vaefunc.VAE((16,), latent_dim=2, hidden=(4,), n_classes=3)
    params = spec.init(0, dtype=F64)
    model = vaefunc.VAE.from_params(params)
    x, eps = torch.rand(2, 16, dtype=F64), torch.randn(5, 2, 2, dtype=F64)
    with pytest.raises(ValueError, match="conditional on 3 classes; pass labels"):
        spec.iwae(params, x, eps)
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        spec.iwae(params, x, eps, labels=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="unconditional"):
        plain = vaefunc.VAE((16,), latent_dim=2, hidden=(4,))
        plain.iwae(plain.init(), x.float(), eps.float(), labels=[0, 1])
    with pytest.raises(ValueError, match="conditional on 3 classes; pass labels"):
        model.iwae(params, x, eps)
    ys = torch.tensor([[0, 1], [2, 2], [1, 0]])
    mapped = torch.func.vmap(lambda y: model.iwae(params, x, eps, y))(ys)
    for y, row in zip(ys, mapped):
        torch.testing.assert_close(row, spec.iwae(params, x, eps, labels=y), rtol=1e-12, atol=0)


def test_sample_with_labels():
    model = vaefunc.VAE((1, 8, 8), latent_dim=2, hidden=(4,), arch="conv", channels=(2,), n_classes=3)
    params = model.init(0)
    xs = model.sample(params, 3, labels=[0, 1, 2], seed=5)
    assert xs.shape == (3, 1, 8, 8) and bool(((xs > 0) & (xs < 1)).all())
    torch.testing.assert_close(model.sample(params, 3, labels=torch.eye(3), seed=5), xs, rtol=0, atol=0)
    same = model.sample(params, 3, labels=1, seed=5)
    torch.testing.assert_close(same[1], xs[1], rtol=0, atol=0)
    assert not torch.equal(same[0], xs[0])
    with pytest.raises(ValueError, match="pass labels"):
        model.sample(params, 3)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        model.sample(params, 3, labels=[0, 1])


def test_train_batches_labels_with_the_same_index_as_the_data():
    """One epoch of train equals the pure step run by hand on (x[perm[i]], y[perm[i]])."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 12, generator=gen), torch.randint(0, 4, (40,), generator=gen)
    model = vaefunc.VAE((12,), latent_dim=2, hidden=(6,), n_classes=4)
    params = model.init(0)
    opt = adam(1e-2)  # given explicitly, train runs this pure step (its default eager Adam is the fused kernel)
    result = vaefunc.train(params, x, labels=y, epochs=1, batch_size=8, optimizer=opt, seed=7, compile=False,
                           progress=False)  # fmt: skip
    step = make_step(model.loss(), opt)
    streams = make_streams(7)
    perm = torch.randperm(40, generator=streams.data).view(5, 8)
    eps = torch.randn(5, 8, 2, generator=streams.noise)
    p, s = params, opt.init(params)
    for i in range(5):
        p, s, _ = step(p, s, x[perm[i]], eps[i], torch.tensor(1.0), torch.tensor(0.0),
                       y=F.one_hot(y[perm[i]], 4).float())  # fmt: skip
    for k in p:
        torch.testing.assert_close(result.params[k], p[k], rtol=0, atol=0, msg=k)
    # a wrong pairing of labels and data trains to different params
    shuffled = vaefunc.train(
        params, x, labels=y.roll(1), epochs=1, batch_size=8, optimizer=opt, seed=7, compile=False, progress=False
    )
    assert not torch.equal(shuffled.params["encoder.0.weight"], p["encoder.0.weight"])


def test_train_with_the_iwae_objective_takes_labels():
    """One epoch of train(objective="iwae", labels=y) equals the pure IWAE step run by hand on
    (x[perm[i]], y[perm[i]]) with eps (k, b, z), and with tanh hidden layers."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(24, 12, generator=gen, dtype=F64), torch.randint(0, 4, (24,), generator=gen)
    params = vaefunc.VAE((12,), latent_dim=2, hidden=(6,), n_classes=4).init(0, dtype=F64)
    opt = adam(1e-2)  # given explicitly, train runs this pure step (its default eager Adam is the fused kernel)
    kw = dict(epochs=1, batch_size=8, optimizer=opt, seed=7, compile=False, progress=False, objective="iwae", k=3)
    result = vaefunc.train(params, x, labels=y, activation="tanh", **kw)
    tanh = vaefunc.VAE((12,), latent_dim=2, hidden=(6,), n_classes=4, activation="tanh")
    step = make_step(tanh.loss("iwae"), opt)
    streams = make_streams(7)
    perm = torch.randperm(24, generator=streams.data).view(3, 8)
    eps = torch.randn(3, 3, 8, 2, generator=streams.noise, dtype=F64)
    p, s = params, opt.init(params)
    one, zero = torch.tensor(1.0, dtype=F64), torch.tensor(0.0, dtype=F64)
    for i in range(3):
        bound = tanh.iwae(p, x[perm[i]], eps[i], y[perm[i]]).mean()
        p, s, metrics = step(p, s, x[perm[i]], eps[i], one, zero, y=F.one_hot(y[perm[i]], 4).to(F64))
        torch.testing.assert_close(metrics["loss"], -bound)  # the loss is -iwae_3 of the labelled batch
    for k in p:
        torch.testing.assert_close(result.params[k], p[k], rtol=0, atol=0, msg=k)
    shuffled = vaefunc.train(params, x, labels=y.roll(1), activation="tanh", **kw)  # a wrong pairing
    assert not torch.equal(shuffled.params["encoder.0.weight"], p["encoder.0.weight"])
