"""vaefunc.legacy: vaefunc 0.1's params-first functions, pinned against the spec.

Each old function builds the spec its params and keywords describe and runs the spec's method, so
every number here is compared bit for bit with the spec-first call (rtol = atol = 0), and every
error with the spec's. The old names answer at their old paths (vaefunc.X, vaefunc.model.X,
vaefunc.losses.elbo, ...). The checkpoints of vaefunc 0.1 are pinned by test_checkpoint_compat.py.
"""

from __future__ import annotations

import pytest
import torch

import vaefunc
from vaefunc import estimators, legacy, likelihoods, losses, presets, priors
from vaefunc.presets import PRESETS, preset_train_kwargs

F64 = torch.float64
EXACT = {"rtol": 0, "atol": 0}
SPECS = {
    "tanh": vaefunc.VAE((12,), latent_dim=3, hidden=(7,), activation="tanh"),
    "gaussian": vaefunc.VAE((12,), latent_dim=3, hidden=(7, 5), likelihood="gaussian", obs_std=0.5),
    "conditional": vaefunc.VAE((12,), latent_dim=3, hidden=(7,), n_classes=4),
    "mog": vaefunc.VAE((12,), latent_dim=3, hidden=(7,), prior="mog", prior_components=3),
    "conv": vaefunc.VAE((1, 8, 8), latent_dim=2, hidden=(4,), arch="conv", channels=(2,), likelihood="continuous_bernoulli"),
}  # fmt: skip


def _inputs(model, b=5, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = model.init(seed, dtype=F64)
    x = torch.rand(b, *model.input_shape, generator=g, dtype=F64)
    eps, eps_k = torch.randn(b, model.latent_dim, generator=g, dtype=F64), torch.randn(k, b, model.latent_dim,
                                                                                      generator=g, dtype=F64)  # fmt: skip
    labels = torch.tensor([0, 1, 2, 3, 1])[:b] if model.n_classes else None
    return params, x, eps, eps_k, labels


def _choices(model):
    return {"activation": model.activation, "likelihood": model.likelihood, "obs_std": model.obs_std}


def test_every_old_name_is_legacys_at_its_old_paths():
    for module, names in legacy.OLD_PATHS.items():
        for name in names:
            assert getattr(module, name) is getattr(legacy, name), f"{module.__name__}.{name}"
    front = ("init", "encode", "decode", "reparameterize", "sample", "elbo", "iwae", "log_weights", "log_likelihood",
             "make_loss", "make_elbo_loss", "prior_log_prob", "kl_monte_carlo", "init_prior", "init_obs_logstd",
             "preset_train_kwargs")  # fmt: skip
    for name in front:
        assert getattr(vaefunc, name) is getattr(legacy, name), name
    for name in ("init", "encode", "decode", "reparameterize", "sample", "input_shape", "data_dim", "latent_dim",
                 "n_classes", "macs_per_example", "flat_features"):  # fmt: skip
        assert getattr(vaefunc.model, name) is getattr(legacy, name), name
    from vaefunc.estimators import iwae
    from vaefunc.losses import elbo, make_loss
    from vaefunc.presets import PRESETS

    assert (elbo, make_loss, iwae, PRESETS) == (legacy.elbo, legacy.make_loss, legacy.iwae, legacy.PRESETS)
    assert estimators.log_weights is legacy.log_weights and likelihoods.obs_log_prob is legacy.obs_log_prob


def test_init_is_the_specs_init():
    old = legacy.init((1, 8, 8), latent_dim=2, hidden=(4,), arch="conv", channels=(2,), n_classes=3, seed=5, dtype=F64)
    new = vaefunc.VAE((1, 8, 8), latent_dim=2, hidden=(4,), arch="conv", channels=(2,), n_classes=3).init(5, dtype=F64)
    assert list(old) == list(new) and all(torch.equal(old[k], new[k]) for k in new)
    assert torch.equal(legacy.init(12, n_classes=None)["decoder.0.weight"], vaefunc.VAE((12,)).init()["decoder.0.weight"])


@pytest.mark.parametrize("name", sorted(SPECS))
def test_the_network_and_the_bounds_equal_the_specs_methods(name):
    model = SPECS[name]
    params, x, eps, eps_k, labels = _inputs(model)
    kw = _choices(model)
    act = {"activation": model.activation}
    for old, new in zip(legacy.encode(params, x, labels, **act), model.encode(params, x, labels)):
        torch.testing.assert_close(old, new, **EXACT)
    torch.testing.assert_close(legacy.decode(params, eps, labels, **act), model.decode(params, eps, labels), **EXACT)
    torch.testing.assert_close(legacy.elbo(params, x, eps, labels=labels, beta=0.5, **kw),
                               model.elbo(params, x, eps, labels, beta=0.5), **EXACT)  # fmt: skip
    torch.testing.assert_close(legacy.elbo(params, x, eps, labels=labels, kl="mc", **kw),
                               model.elbo(params, x, eps, labels, kl="mc"), **EXACT)  # fmt: skip
    torch.testing.assert_close(legacy.iwae(params, x, eps_k, labels=labels, **kw), model.iwae(params, x, eps_k, labels),
                               **EXACT)  # fmt: skip
    torch.testing.assert_close(legacy.log_weights(params, x, eps_k, labels=labels, **kw),
                               model.log_weights(params, x, eps_k, labels), **EXACT)  # fmt: skip
    torch.testing.assert_close(legacy.log_likelihood(params, x, labels=labels, k=6, chunk=4, progress=False, **kw),
                               model.log_likelihood(params, x, labels, k=6, chunk=4, progress=False), **EXACT)  # fmt: skip
    rec, kl = legacy.elbo_terms(params, x, eps, y=labels, **kw)
    torch.testing.assert_close(rec - kl, model.elbo(params, x, eps, labels), **EXACT)
    one = legacy.elbo_parts(params, x[1], eps[1], y=None if labels is None else labels[1], **kw)
    torch.testing.assert_close(one[0] - one[1], model.elbo(params, x, eps, labels)[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(legacy.prior_log_prob(params, eps, **act), model.prior_log_prob(params, eps), **EXACT)


@pytest.mark.parametrize("name", ["tanh", "gaussian", "conditional"])
def test_sample_is_the_specs_sample(name):
    model = SPECS[name]
    params, *_ = _inputs(model)
    labels = [0, 1, 2] if model.n_classes else None
    old = legacy.sample(params, 3, seed=4, labels=labels, likelihood=model.likelihood, activation=model.activation)
    torch.testing.assert_close(old, model.sample(params, 3, seed=4, labels=labels), **EXACT)
    torch.testing.assert_close(legacy.sample(params, 3, seed=4, labels=labels, model=model), old, **EXACT)


def test_y_is_the_older_name_of_labels_and_not_both():
    model = SPECS["conditional"]
    params, x, eps, eps_k, labels = _inputs(model)
    torch.testing.assert_close(legacy.elbo(params, x, eps, y=labels), legacy.elbo(params, x, eps, labels=labels), **EXACT)
    torch.testing.assert_close(legacy.encode(params, x, y=labels)[0], model.encode(params, x, labels)[0], **EXACT)
    for call in (lambda: legacy.elbo(params, x, eps, y=labels, labels=labels),
                 lambda: legacy.iwae(params, x, eps_k, y=labels, labels=labels),
                 lambda: legacy.encode(params, x, labels, y=labels)):  # fmt: skip
        with pytest.raises(TypeError, match="give labels= .*not both labels= and y="):
            call()


def test_a_model_keyword_must_agree_with_the_choices():
    model = SPECS["gaussian"]
    params, x, *_ = _inputs(model)
    with pytest.raises(ValueError, match=r"activation='tanh' differs from the model's 'relu'"):
        legacy.log_likelihood(params, x, k=2, model=model, activation="tanh", progress=False)
    legacy.log_likelihood(params, x, k=2, model=model, activation="relu", progress=False)  # the default: agrees
    with pytest.raises(TypeError, match="model must be a vaefunc.VAE spec"):
        legacy.sample(params, 2, model="tanh")


def test_the_old_functions_refuse_what_the_spec_refuses():
    """One validator: the same error, word for word, from the old call and the method."""
    model = SPECS["conditional"]
    params, x, eps, eps_k, labels = _inputs(model)
    bad = [
        ("x", x.clone().fill_(float("nan")), eps, labels, r"x must be finite"),
        ("x", x + 1.0, eps, labels, r"x must lie in \[0, 1\]"),
        ("eps", x, eps.clone().fill_(float("inf")), labels, r"eps must be finite"),
        ("labels", x, eps, None, r"conditional on 4 classes; pass labels"),
        ("labels", x, eps, labels + 3, r"labels must lie in \[0, 4\)"),
        ("labels", x, eps, labels[:2], r"integer labels must have shape \(5,\)"),
    ]
    for _, xb, eb, yb, match in bad:
        with pytest.raises(ValueError, match=match) as old:
            legacy.elbo(params, xb, eb, labels=yb)
        with pytest.raises(ValueError, match=match) as new:
            model.elbo(params, xb, eb, yb)
        assert str(old.value) == str(new.value)
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        model.elbo(params, x, eps, labels, beta=-1.0)
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        legacy.elbo(params, x, eps, labels=labels, beta=float("nan"))


@pytest.mark.parametrize("name", ["tanh", "gaussian", "conditional"])
def test_the_old_losses_are_the_specs_loss(name):
    model = SPECS[name]
    params, x, eps, eps_k, labels = _inputs(model)
    y = None if labels is None else torch.nn.functional.one_hot(labels, model.n_classes).to(F64)
    beta, capacity = torch.tensor(0.7, dtype=F64), torch.tensor(0.0, dtype=F64)
    new = model.loss()(params, x, eps, beta, capacity, y)
    for old in (legacy.make_loss(**_choices(model))(params, x, eps, beta, capacity, y=y),
                legacy.make_elbo_loss(**_choices(model))(params, x, eps, beta, y=y)):  # fmt: skip
        torch.testing.assert_close(old[0], new[0], **EXACT)
        assert old[1].keys() == new[1].keys() and all(torch.equal(old[1][k], new[1][k]) for k in new[1])
    iw = legacy.make_loss(objective="iwae", k=3, **_choices(model))(params, x, eps_k, beta, capacity, y=y)
    torch.testing.assert_close(iw[0], model.loss("iwae")(params, x, eps_k, beta, capacity, y)[0], **EXACT)
    with pytest.raises(ValueError, match="k must be a positive int; got 0"):
        legacy.make_loss(k=0)
    with pytest.raises(ValueError, match=r"likelihood must be one of .*got 'poisson'"):
        legacy.make_elbo_loss(likelihood="poisson")
    with pytest.raises(ValueError, match=r"likelihood must be one of .*got 'poisson'"):
        legacy.elbo(params, x, eps, labels=labels, likelihood="poisson")


@pytest.mark.parametrize("kind", ["mog", "vamp"])
def test_init_prior_draws_the_specs_prior(kind):
    model = vaefunc.VAE((12,), latent_dim=3, hidden=(7,), prior=kind, prior_components=4)
    plain = vaefunc.VAE((12,), latent_dim=3, hidden=(7,)).init(2, dtype=F64)
    old, new = legacy.init_prior(plain, kind, n_components=4, seed=2), model.init(2, dtype=F64)
    assert sorted(old) == sorted(new) and all(torch.equal(old[k], new[k]) for k in new)
    assert sorted(legacy.init_prior(old, "normal")) == sorted(plain)
    g = torch.Generator().manual_seed(1)
    mu, logvar, z = (torch.randn(5, 3, generator=g, dtype=F64) for _ in range(3))
    torch.testing.assert_close(legacy.kl_monte_carlo(old, mu, logvar, z),
                               priors.kl_single_sample(model, new, mu, logvar, z), **EXACT)  # fmt: skip
    with pytest.raises(ValueError, match=r"n_components must be a positive int; got 0"):
        legacy.init_prior(plain, kind, n_components=0)


@pytest.mark.parametrize("per_pixel", [False, True])
def test_init_obs_logstd_and_obs_log_prob_are_the_specs(per_pixel):
    model = vaefunc.VAE((12,), latent_dim=3, hidden=(7,), likelihood="gaussian", obs_std=0.5,
                        learn_obs_std="pixel" if per_pixel else "global")  # fmt: skip
    plain = vaefunc.VAE((12,), latent_dim=3, hidden=(7,)).init(0, dtype=F64)
    old, new = legacy.init_obs_logstd(plain, per_pixel=per_pixel, std=0.5), model.init(0, dtype=F64)
    assert sorted(old) == sorted(new) and all(torch.equal(old[k], new[k]) for k in new)
    g = torch.Generator().manual_seed(0)
    out, x = torch.randn(4, 12, generator=g, dtype=F64), torch.rand(4, 12, generator=g, dtype=F64)
    torch.testing.assert_close(legacy.obs_log_prob(old, out, x, likelihood="gaussian"), model.log_px(new, out, x),
                               **EXACT)  # fmt: skip
    for name in ("bernoulli", "continuous_bernoulli"):
        spec = vaefunc.VAE((12,), latent_dim=3, hidden=(7,), likelihood=name)
        torch.testing.assert_close(legacy.obs_log_prob(plain, out, x, likelihood=name), spec.log_px(plain, out, x),
                                   **EXACT)  # fmt: skip


def test_the_readers_of_a_param_dict():
    model = SPECS["conv"]
    params = model.init()
    assert legacy.input_shape(params) == (1, 8, 8) and legacy.data_dim(params) == 64
    assert legacy.latent_dim(params) == 2 and legacy.n_classes(params) == 0
    assert legacy.macs_per_example(params) == model.macs_per_example()
    assert legacy.flat_features(params, torch.zeros(3, 1, 8, 8)).shape == (3, 64)
    torch.testing.assert_close(legacy.reparameterize(torch.ones(2), torch.zeros(2), torch.ones(2)), torch.full((2,), 2.0))


def test_the_presets_in_the_old_layout():
    assert list(legacy.PRESETS) == ["iwae-paper", "iwae-paper-vae"]  # 0.1 had no two-layer model
    kw = legacy.preset_train_kwargs("iwae-paper", n_train=60000, epochs=3)
    new = presets.preset("iwae-paper")
    assert kw["init"] == {"latent_dim": new.model["latent_dim"], "hidden": new.model["hidden"]}
    assert {k: kw["train"][k] for k in ("objective", "k", "batch_size", "binarize")} == {
        "objective": "iwae", "k": 50, "batch_size": 20, "binarize": "dynamic"}
    assert kw["train"]["epochs"] == 3 and kw["train"]["activation"] == "tanh"
    assert isinstance(kw["train"]["optimizer"], vaefunc.Optimizer)
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        legacy.preset_train_kwargs("nope", 10)
    with pytest.raises(ValueError, match="n_train must be a positive int; got 0"):
        legacy.preset_train_kwargs("iwae-paper", 0)


def test_the_spec_first_modules_do_not_define_the_old_names():
    """They are attached by vaefunc.legacy: the modules' own source knows only the spec-first functions."""
    import inspect

    for module, names in legacy.OLD_PATHS.items():
        source = inspect.getsource(module)
        assert not [n for n in names if f"def {n}(" in source or f"\n{n}: " in source or f"\n{n} = " in source]
    assert losses.training_loss and estimators.importance_bound  # the spec-first forms they hold


def test_init_prior_checks_and_removes():
    params = vaefunc.VAE((6,), latent_dim=4, hidden=(5,)).init(0, dtype=F64)
    assert set(legacy.init_prior(legacy.init_prior(params, "mog"), "normal")) == set(params)
    assert priors.prior_kind(params) == "normal"
    with pytest.raises(ValueError, match="kind"):
        legacy.init_prior(params, "laplace")
    with pytest.raises(ValueError, match="n_components"):
        legacy.init_prior(params, "mog", n_components=0)


# ---------------------------------------------------------------- the presets in 0.1's layout (tests/test_presets.py before)


def test_iwae_paper_preset_is_the_papers_setting():
    p = PRESETS["iwae-paper"]
    assert p["init"] == {"latent_dim": 50, "hidden": (200, 200)}
    assert p["train"] | {} == {
        "objective": "iwae", "k": 50, "batch_size": 20, "epochs": 3280, "likelihood": "bernoulli", "binarize": "dynamic",
        "activation": "tanh",  # the paper's two deterministic layers are tanh
    }  # fmt: skip
    assert p["optimizer"] | {} == {
        "name": "adam", "lr": "iwae-paper", "base_lr": 1e-3, "stages": 8, "b1": 0.9, "b2": 0.999, "eps": 1e-4,
    }  # fmt: skip
    vae = PRESETS["iwae-paper-vae"]
    assert vae["train"]["objective"] == "elbo" and vae["init"] == p["init"]
    assert vae["train"]["activation"] == "tanh"


def test_preset_trains_a_tanh_network():
    """The preset's train kwargs carry activation="tanh" into train: one epoch equals the same call
    with that activation given by hand, and differs from the ReLU default."""
    kw = preset_train_kwargs("iwae-paper-vae", n_train=40, epochs=1, progress=False, compile=False)
    assert kw["train"]["activation"] == "tanh"
    params = vaefunc.init((16,), **(kw["init"] | {"latent_dim": 2, "hidden": (8, 8)}), seed=0, dtype=torch.float64)
    x = torch.rand(40, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = vaefunc.train(params, x, **kw["train"]).params
    by_hand = {k: v for k, v in kw["train"].items() if k != "activation"}
    tanh = vaefunc.train(params, x, **by_hand, activation="tanh").params
    relu = vaefunc.train(params, x, **by_hand).params
    assert all(torch.equal(got[k], tanh[k]) for k in got)
    assert not torch.allclose(got["encoder.0.weight"], relu["encoder.0.weight"])


def test_preset_train_kwargs_build_the_optimizer_and_train():
    kw = preset_train_kwargs("iwae-paper", n_train=40, epochs=2, k=3, progress=False, compile=False)
    assert kw["train"]["epochs"] == 2 and kw["train"]["k"] == 3
    assert "optimizer" in kw["train"] and "optimizer" not in PRESETS["iwae-paper"]["train"]  # the preset is not modified
    params = vaefunc.init((16,), **kw["init"], seed=0)
    x = torch.rand(40, 16, generator=torch.Generator().manual_seed(0))
    result = vaefunc.train(params, x, **kw["train"])
    # Two steps per epoch: the second epoch ran at stage 1 of the schedule, lr = 1e-3 * 10^(-1/7).
    assert float(result.opt_state[1].lr) == pytest.approx(1e-3 * 10 ** (-1 / 7))
    with pytest.raises(ValueError, match="preset"):
        preset_train_kwargs("iwae", n_train=10)
