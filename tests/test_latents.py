"""Deeper latents (vaefunc.latents): two stochastic layers and the IAF posterior in every bound."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal

import vaefunc

F64 = torch.float64


def two_layer(**fields):
    return vaefunc.VAE((10,), latent_dim=4, hidden=(6, 5), activation="tanh", top_latent_dim=3, top_hidden=(5,),
                       **fields)  # fmt: skip


def _mlp(params, prefix, h, n_layers):
    """An nn.Sequential(Linear, Tanh, ..., Linear) walked by hand: tanh between the layers."""
    for i in range(n_layers):
        h = h @ params[f"{prefix}.{2 * i}.weight"].T + params[f"{prefix}.{2 * i}.bias"]
        if i < n_layers - 1:
            h = torch.tanh(h)
    return h


def oracle_log_weights(params, x, eps):
    """log p(x, z1, z2) - log q(z1, z2 | x) of the IWAE paper's two-layer model, written from the paper with
    torch.distributions: q(z1|x) q(z2|z1), p(z2) = N(0, I), p(z1|z2), p(x|z1) Bernoulli. eps (k, b, 7): (k, b)."""
    mu1, logvar1 = _mlp(params, "encoder", x, 3).chunk(2, -1)
    q1 = Normal(mu1, (0.5 * logvar1).exp())
    z1 = mu1 + (0.5 * logvar1).exp() * eps[..., :4]
    mu2, logvar2 = _mlp(params, "top_encoder", z1, 2).chunk(2, -1)
    q2 = Normal(mu2, (0.5 * logvar2).exp())
    z2 = mu2 + (0.5 * logvar2).exp() * eps[..., 4:]
    p_mu, p_logvar = _mlp(params, "top_decoder", z2, 2).chunk(2, -1)
    log_p = (Normal(0.0, 1.0).log_prob(z2).sum(-1) + Normal(p_mu, (0.5 * p_logvar).exp()).log_prob(z1).sum(-1)
             + Bernoulli(logits=_mlp(params, "decoder", z1, 3)).log_prob(x).sum(-1))  # fmt: skip
    return log_p - q1.log_prob(z1).sum(-1) - q2.log_prob(z2).sum(-1)


def test_two_layer_bounds_match_a_hand_written_oracle_in_float64():
    model = two_layer()
    params = model.init(seed=0, dtype=F64)
    assert set(params) >= {"top_encoder.0.weight", "top_encoder.2.weight", "top_decoder.2.weight"}
    assert params["top_encoder.2.weight"].shape == (2 * 3, 5) and params["top_decoder.2.weight"].shape == (2 * 4, 5)
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((5, 10), 0.4, dtype=F64), generator=g)
    eps = torch.randn(7, 5, model.noise_dim, generator=g, dtype=F64)
    expected = oracle_log_weights(params, x, eps)
    torch.testing.assert_close(model.log_weights(params, x, eps), expected, rtol=1e-13, atol=1e-12)
    iwae = torch.logsumexp(expected, 0) - math.log(7)
    torch.testing.assert_close(model.iwae(params, x, eps), iwae, rtol=1e-13, atol=1e-12)
    torch.testing.assert_close(model.elbo(params, x, eps[0]), expected[0], rtol=1e-13, atol=1e-12)
    ll = model.log_likelihood(params, x, k=50, seed=3, progress=False, compile=False)
    assert ll.dtype == F64 and torch.isfinite(ll).all()


@pytest.mark.parametrize("fields", [
    {"top_latent_dim": 3},
    {"posterior": "iaf"},
    {"posterior": "iaf", "flow_steps": 3, "top_latent_dim": 2, "prior": "mog", "prior_components": 3},
    {"top_latent_dim": 2, "n_classes": 3},
    {"top_latent_dim": 2, "arch": "conv", "input_shape": (1, 8, 8), "hidden": (6,), "likelihood": "gaussian"},
], ids=["two-layer", "iaf", "iaf+two-layer+mog", "two-layer conditional", "two-layer conv"])  # fmt: skip
def test_iwae_with_one_sample_is_the_elbo_for_every_new_family(fields):
    fields = {"input_shape": (10,), "latent_dim": 4, "hidden": (6,)} | fields
    model = vaefunc.VAE(fields.pop("input_shape"), **fields)
    params = model.init(seed=1, dtype=F64)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(5, *model.input_shape, generator=g, dtype=F64)
    eps = torch.randn(1, 5, model.noise_dim, generator=g, dtype=F64)
    y = torch.tensor([0, 1, 2, 0, 1]) if model.n_classes else None
    torch.testing.assert_close(model.iwae(params, x, eps, y), model.elbo(params, x, eps[0], y), rtol=1e-13, atol=1e-12)
    # the single-sample ELBO's KL term is the Monte Carlo one: log q - log p at the same sample
    rec, kl = model.elbo_terms(params, x, eps[0], y)
    torch.testing.assert_close(rec - kl, model.log_weights(params, x, eps, y)[0], rtol=1e-13, atol=1e-12)


def test_the_elbo_is_below_the_log_likelihood_and_iwae_tightens_with_k():
    model = two_layer(posterior="iaf")
    params = model.init(seed=0, dtype=F64)
    x = torch.bernoulli(torch.full((4, 10), 0.3, dtype=F64), generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    bounds = [model.iwae(params, x, torch.randn(k, 4, model.noise_dim, generator=g, dtype=F64)).mean() for k in (1, 100)]
    ll = model.log_likelihood(params, x, k=20000, seed=5, progress=False, compile=False).mean()
    assert bounds[0] < bounds[1] < ll + 0.05


def test_two_layer_samples_come_from_p_z2_then_p_z1_given_z2():
    model = two_layer()
    params = model.init(seed=0)
    from vaefunc import latents, priors

    z1 = latents.draw(model, params, 4000, torch.Generator().manual_seed(0))
    z2 = priors.draw(model, params, 4000, torch.Generator().manual_seed(0))  # the same first draws
    assert z1.shape == (4000, 4) and z2.shape == (4000, 3)
    mu, logvar = latents.gaussian(model, params, model.layout.top_dec, z2, None)
    residual = (z1 - mu) / (0.5 * logvar).exp()  # standard normal if z1 ~ p(z1|z2)
    assert abs(float(residual.mean())) < 4 * 1 / math.sqrt(residual.numel())  # 4 standard errors
    assert abs(float(residual.var()) - 1) < 0.05
    assert model.sample(params, 3, seed=1).shape == (3, 10)
    torch.testing.assert_close(model.sample(params, 3, seed=1), model.sample(params, 3, seed=1), rtol=0, atol=0)


def test_closed_form_kl_free_bits_and_the_vampprior_are_refused_where_they_do_not_apply():
    for model in (two_layer(), vaefunc.VAE((10,), latent_dim=4, posterior="iaf")):
        params, x = model.init(seed=0), torch.rand(3, 10)
        eps = torch.randn(3, model.noise_dim)
        assert not model.closed_form_kl
        with pytest.raises(ValueError, match="kl='closed' needs one Gaussian stochastic layer"):
            vaefunc.losses.check_kl(model, "closed")
        with pytest.raises(ValueError, match="per_dim needs a closed-form KL"):
            model.elbo_terms(params, x, eps, per_dim=True)
        with pytest.raises(ValueError, match="free bits need a closed-form KL"):
            model.loss("elbo", vaefunc.free_bits(0.5))
    with pytest.raises(ValueError, match="VampPrior .* needs one Gaussian stochastic layer"):
        two_layer(prior="vamp")
    with pytest.raises(ValueError, match="flow_steps and flow_hidden are for posterior='iaf'"):
        vaefunc.VAE((10,), flow_steps=2)
    with pytest.raises(ValueError, match="top_hidden is for a second stochastic layer"):
        vaefunc.VAE((10,), top_hidden=(5,))
    with pytest.raises(ValueError, match="posterior must be one of"):
        vaefunc.VAE((10,), posterior="flow")
    with pytest.raises(ValueError, match=r"eps must have shape \(k, b, z\) = \(k, 3, 7\)"):
        two_layer().iwae(two_layer().init(), torch.rand(3, 10), torch.randn(2, 3, 4))


def test_specs_round_trip_and_older_spec_data_is_unchanged():
    for model in (two_layer(), two_layer(posterior="iaf", flow_steps=3, flow_hidden=(9, 9))):
        assert vaefunc.VAE.from_dict(model.to_dict()) == model
    assert two_layer(posterior="iaf").flow_hidden == (8,)  # 2 * latent_dim
    assert vaefunc.VAE((10,), top_latent_dim=3).top_hidden == (3, 3)  # as in the IWAE paper
    assert set(vaefunc.VAE((10,)).to_dict()) == {
        "input_shape", "latent_dim", "hidden", "arch", "channels", "kernel", "n_classes", "activation", "likelihood",
        "obs_std", "learn_obs_std", "prior", "prior_components", "semi_supervised"}  # fmt: skip


def test_deeper_models_train_resume_and_checkpoint(tmp_path):
    model = two_layer(posterior="iaf")
    x = torch.bernoulli(torch.full((64, 10), 0.3), generator=torch.Generator().manual_seed(0))
    kw = {"model": model, "batch_size": 16, "compile": False, "progress": False, "objective": "iwae", "k": 3}
    whole = vaefunc.train(model.init(seed=0), x, epochs=2, **kw)
    first = vaefunc.train(model.init(seed=0), x, epochs=1, **kw)
    path = vaefunc.save(tmp_path / "c.safetensors", first.params, model=model, state=first.state)
    ckpt = vaefunc.load(path)
    assert ckpt.model == model
    resumed = vaefunc.train(ckpt.params, x, epochs=2, resume=ckpt.state, **kw)
    for k, v in whole.params.items():
        torch.testing.assert_close(resumed.params[k], v, rtol=0, atol=0)
    ensemble = vaefunc.train_many(vaefunc.stack([model.init(seed=s) for s in (0, 1)]), x, epochs=1, seed=(0, 1),
                                  **kw)  # fmt: skip
    assert ensemble.params["flow.0.0.weight"].shape[0] == 2


def test_the_command_line_trains_a_two_layer_iaf_model(tmp_path):
    from vaefunc.cli import main

    out = tmp_path / "run"
    code = main(["train", "--data", "digits", "--limit", "200", "--epochs", "1", "--latent-dim", "4", "--hidden", "8",
                 "--top-latent-dim", "2", "--posterior", "iaf", "--flow-steps", "1", "--batch-size", "32",
                 "--progress", "never", "--out", str(out), "--device", "cpu"])  # fmt: skip
    assert code == 0
    model = vaefunc.load(out / "checkpoint.safetensors").model
    assert (model.top_latent_dim, model.top_hidden, model.posterior, model.flow_steps) == (2, (2, 2), "iaf", 1)
    assert vaefunc.presets.preset("iwae-paper-2-layer").model["top_latent_dim"] == 50


def test_to_module_refuses_deeper_models_by_name():
    for model, kind in ((two_layer(), "two-stochastic-layer"), (vaefunc.VAE((10,), posterior="iaf"), "IAF-posterior")):
        with pytest.raises(ValueError, match=f"MLP VAEs only; got {kind} params"):
            vaefunc.to_module(model.init(seed=0), model=model)
