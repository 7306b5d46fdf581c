"""vaefunc.VAE: the spec holds every static choice, its methods are the params-first functions,
and it round-trips through dicts, params and checkpoints."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import vaefunc
from vaefunc import metrics, pictures
from vaefunc.traversal import traversal

F64 = torch.float64

SPECS = {
    "mlp": vaefunc.VAE((16,), latent_dim=3, hidden=(8, 6)),
    "tanh image": vaefunc.VAE((1, 4, 4), latent_dim=2, hidden=(8,), activation="tanh"),
    "conv conditional": vaefunc.VAE((1, 8, 8), latent_dim=2, hidden=(4,), arch="conv", channels=(2,), n_classes=3),
    "conv default channels": vaefunc.VAE((1, 16, 16), latent_dim=2, hidden=(), arch="conv"),
    "mog gaussian": vaefunc.VAE((16,), latent_dim=2, hidden=(8,), likelihood="gaussian", obs_std=0.5, prior="mog",
                                prior_components=3),
    "vamp learned std": vaefunc.VAE((16,), latent_dim=2, hidden=(8,), likelihood="gaussian", learn_obs_std="pixel",
                                    prior="vamp", prior_components=2),
    "continuous bernoulli": vaefunc.VAE((16,), latent_dim=2, hidden=(8,), likelihood="continuous_bernoulli"),
}  # fmt: skip


def _inputs(model, b=5, k=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(b, *model.input_shape, generator=gen, dtype=F64)
    eps = torch.randn(*((k,) if k else ()), b, model.latent_dim, generator=gen, dtype=F64)
    y = torch.randint(0, model.n_classes, (b,), generator=gen) if model.n_classes else None
    return x, eps, y


def test_a_spec_is_frozen_hashable_and_canonical():
    model = vaefunc.VAE(784, hidden=[400])
    assert model == vaefunc.VAE((784,), hidden=(400,)) and hash(model) == hash(vaefunc.VAE((784,)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.latent_dim = 3
    assert vaefunc.VAE((1, 28, 28), arch="conv").channels == (32, 32)  # the default layout, resolved
    assert vaefunc.VAE((784,), prior="normal", prior_components=7).prior_components == 0
    assert {model, vaefunc.VAE((784,), activation="tanh")} != {model}  # a tanh model is another spec


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"input_shape": (0,)}, ValueError, r"input_shape must be positive ints"),
        ({"input_shape": (784,), "hidden": 400}, TypeError, r"hidden must be a sequence of ints, e\.g\. \(400,\); got 400"),
        ({"input_shape": (784,), "latent_dim": True}, ValueError, r"latent_dim must be a positive int; got True"),
        ({"input_shape": (784,), "activation": "sigmoid"}, ValueError, r"activation must be one of"),
        ({"input_shape": (784,), "likelihood": "poisson"}, ValueError, r"likelihood must be one of"),
        ({"input_shape": (784,), "learn_obs_std": "global"}, ValueError, r"learn_obs_std needs likelihood='gaussian'"),
        ({"input_shape": (784,), "obs_std": 0.0}, ValueError, r"obs_std must be a finite number > 0.0"),
        ({"input_shape": (784,), "channels": (8,)}, ValueError, r"channels and kernel are for arch='conv' only"),
        ({"input_shape": (1, 28, 30), "arch": "conv"}, ValueError, r"square image"),
        ({"input_shape": (784,), "prior": "mog", "prior_components": 0}, ValueError, r"prior_components"),
    ],
)  # fmt: skip
def test_bad_fields_are_refused_on_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        vaefunc.VAE(**kwargs)


@pytest.mark.parametrize("name", list(SPECS))
def test_init_makes_exactly_the_keys_and_shapes_the_spec_says(name):
    model = SPECS[name]
    params = model.init(seed=1, dtype=F64)
    assert {k: tuple(v.shape) for k, v in params.items()} == model.param_shapes()
    model.check(params)
    with pytest.raises(ValueError, match="does not use"):
        model.check(params | {"extra": torch.zeros(1, dtype=F64)})
    missing = dict(params)
    del missing[next(k for k in params if k.endswith("2.weight") or k.startswith("prior."))]
    with pytest.raises(ValueError, match="missing"):
        model.check(missing)


@pytest.mark.parametrize("name", list(SPECS))
def test_from_params_reads_back_the_spec(name):
    """What the params record comes back from their shapes; the rest is given (here, from the spec)."""
    model = SPECS[name]
    params = model.init(seed=0)
    choices = {"activation": model.activation, "obs_std": model.obs_std, "input_shape": model.input_shape}
    if model.learn_obs_std is None:
        choices["likelihood"] = model.likelihood
    assert vaefunc.VAE.from_params(params, **choices) == model


@pytest.mark.parametrize("name", list(SPECS))
def test_to_dict_round_trips_through_json(name):
    import json

    model = SPECS[name]
    assert vaefunc.VAE.from_dict(json.loads(json.dumps(model.to_dict()))) == model
    with pytest.raises(ValueError, match="unknown model spec keys"):
        vaefunc.VAE.from_dict(model.to_dict() | {"activaton": "tanh"})


@pytest.mark.parametrize("name", list(SPECS))
def test_the_spec_round_trips_through_a_checkpoint(name, tmp_path):
    model = SPECS[name]
    params = model.init(seed=0)
    path = vaefunc.save(tmp_path / "m.safetensors", params, model=model)
    ckpt = vaefunc.load(path)
    assert ckpt.model == model
    assert all(torch.equal(ckpt.params[k], params[k]) for k in params)


def test_save_refuses_params_that_are_not_the_models():
    model = vaefunc.VAE((16,), latent_dim=2, hidden=(8,))
    with pytest.raises(ValueError, match="encoder"):
        vaefunc.save("never-written.safetensors", vaefunc.VAE((16,), latent_dim=3).init(), model=model)


def test_a_spec_and_conflicting_keywords_are_refused():
    """train with model= and a keyword choice that contradicts it (the params-first functions: tests/test_legacy.py)."""
    model = vaefunc.VAE((16,), latent_dim=2, hidden=(8,), activation="tanh")
    params = model.init()
    with pytest.raises(ValueError, match="activation='elu' differs"):
        vaefunc.train(params, torch.rand(32, 16), model=model, activation="elu", progress=False)


def test_sample_traversal_and_pictures_agree_on_the_continuous_bernoulli_mean():
    """One meaning of "the decoder's mean" everywhere: the continuous Bernoulli's mean, not its logits."""
    model = SPECS["continuous bernoulli"]
    params = model.init(seed=0)
    from vaefunc.likelihoods import continuous_bernoulli_mean

    z = torch.zeros(1, model.latent_dim)
    want = continuous_bernoulli_mean(model.decode(params, z))
    assert torch.allclose(model.mean(params, z), want)
    swept = traversal(params, None, model=model, steps=3)  # the middle value of each row is z = 0
    assert torch.allclose(swept[0, 1], want[0])
    assert bool(((model.sample(params, 8) >= 0) & (model.sample(params, 8) <= 1)).all())
    assert torch.equal(pictures.mean_images(params, z, (1, 4, 4), model=model), want.reshape(1, 1, 4, 4))


def test_metrics_and_pictures_take_the_spec():
    model = SPECS["tanh image"]
    params = model.init(seed=0, dtype=F64)
    x, _, _ = _inputs(model, b=10)
    by_model = metrics.dataset_elbo(params, x, model=model, seed=3)
    assert by_model == metrics.dataset_elbo(params, x, activation="tanh", seed=3)
    assert by_model != metrics.dataset_elbo(params, x, seed=3)  # a relu reading of the same params
    assert metrics.dataset_elbo(params, x, model=model, seed=3, batch_size=3) == pytest.approx(by_model, rel=1e-12)
    rows = pictures.reconstructions(params, x, model=model)
    assert rows.shape == (20, 1, 4, 4)


def test_the_step_cache_keys_on_the_spec():
    """A model's loss is a compile-time constant: one spec, one cached step; another spec, another."""
    from vaefunc.runners import Plan, _advance
    from vaefunc.training import default_optimizer

    opt = default_optimizer(0.9, 0.999, 1e-8, None)
    plan = lambda m: Plan(m, "elbo", "beta", 0.0, opt, False, "cpu")  # noqa: E731
    a, b = SPECS["mlp"], dataclasses.replace(SPECS["mlp"], activation="gelu")
    assert _advance(plan(a)) is _advance(plan(vaefunc.VAE((16,), latent_dim=3, hidden=(8, 6))))
    assert _advance(plan(a)) is not _advance(plan(b))


def test_init_many_takes_a_spec_and_m():
    model = SPECS["conv conditional"]
    stacked = vaefunc.init_many(3, model=model, seed=4)
    model.check(stacked, stacked=True)
    assert torch.equal(stacked["encoder.0.weight"][2], model.init(seed=6)["encoder.0.weight"])
    assert torch.equal(vaefunc.init_many(k=2, input_shape=(16,))["decoder.0.bias"],
                       vaefunc.init_many(2, (16,))["decoder.0.bias"])  # k= is the older name of m  # fmt: skip


def test_conditional_models_interpolate_and_sweep_with_their_labels():
    model = SPECS["conv conditional"]
    params = model.init(seed=0)
    x, _, y = _inputs(model, b=4)
    x, y2 = x.float(), y.roll(1)
    rows = pictures.interpolation(params, x[:2], x[2:], steps=3, model=model, labels_a=y[:2], labels_b=y2[2:])
    assert rows.shape == (6, 1, 8, 8)
    ends = model.mean(params, model.encode(params, x[:2], y[:2])[0], y[:2]).clamp(0, 1)
    torch.testing.assert_close(rows.view(2, 3, 1, 8, 8)[:, 0], ends)  # t = 0 is the first input's code and label
    with pytest.raises(ValueError, match="conditional on 3 classes"):
        pictures.interpolation(params, x[:2], x[2:], model=model)
    from vaefunc.sweep import rate_distortion

    rate, distortion = rate_distortion(vaefunc.init_many(2, model=model), x, model=model, labels=y)
    assert rate.shape == distortion.shape == (2,)
