"""vaefunc.diagnostics: gradient SNR and variance per network, in bounded memory."""

from __future__ import annotations

import pytest
import torch
from torch.func import grad

from linear_gaussian import F64, model_of, near_posterior
from vaefunc.diagnostics import gradient_draws, gradient_snr

S = 0.7


def setup(d=3, z=2, b=4):
    model, params = model_of(d, z, S), near_posterior(d, z, seed=3, s=S)
    x = 1.5 * torch.randn(b, d, generator=torch.Generator().manual_seed(0), dtype=F64)
    return model, params, x


def test_running_moments_equal_the_draws_moments():
    model, params, x = setup()
    out = gradient_snr(model, params, x, objective="iwae", gradient="dreg", k=5, samples=300, chunk=70, seed=1)
    eps = torch.randn(300, 5, 4, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    draws = gradient_draws(model, params, x, eps, objective="iwae", gradient="dreg")
    enc = torch.cat([draws[k].flatten(1) for k in sorted(draws) if k.startswith("encoder")], 1)
    snr = enc.mean(0).abs() / enc.std(0)
    assert out["encoder"]["n"] == enc.shape[1] and out["decoder"]["n"] == sum(
        v.numel() for k, v in params.items() if k.startswith("decoder"))  # fmt: skip
    assert out["encoder"]["snr"] == pytest.approx(float(snr.mean()), rel=1e-10)
    assert out["encoder"]["variance"] == pytest.approx(float(enc.var(0).mean()), rel=1e-10)
    signal = (enc.mean(0).square() - enc.var(0) / 300).sum()  # the squared means, debiased
    assert out["encoder"]["snr_pooled"] == pytest.approx(float((signal / enc.var(0).sum()).sqrt()), rel=1e-10)
    # the draws are the estimator's: the same as one grad per noise draw
    one = grad(lambda p: -model.loss("iwae", gradient="dreg")(p, x, eps[7], torch.tensor(1.0, dtype=F64),
                                                                torch.tensor(0.0, dtype=F64))[0])(params)  # fmt: skip
    torch.testing.assert_close(draws["encoder.0.weight"][7], one["encoder.0.weight"])


def test_the_snr_trends_of_rainforth_et_al():
    """Under the reparameterized IWAE gradient the encoder's SNR falls with k and the decoder's rises; DReG's
    encoder SNR is above the reparameterized one at every k (measured here: 0.54 -> 0.30 and 0.65 -> 3.1 from
    k = 1 to 256; DReG 1.08 and 0.42)."""
    model, params, x = setup()
    snr = {(g, k): gradient_snr(model, params, x, objective="iwae", gradient=g, k=k, samples=400, seed=2)
           for g in ("reparam", "dreg") for k in (1, 256)}  # fmt: skip
    assert snr["reparam", 256]["encoder"]["snr"] < 0.7 * snr["reparam", 1]["encoder"]["snr"]
    assert snr["reparam", 256]["decoder"]["snr"] > 3 * snr["reparam", 1]["decoder"]["snr"]
    for k in (1, 256):
        assert snr["dreg", k]["encoder"]["snr"] > 1.3 * snr["reparam", k]["encoder"]["snr"]
        assert snr["dreg", k]["decoder"]["snr"] == pytest.approx(snr["reparam", k]["decoder"]["snr"], rel=1e-9)  # same


def test_bad_arguments_are_named():
    model, params, x = setup()
    with pytest.raises(ValueError, match="samples"):
        gradient_snr(model, params, x, samples=1)
    with pytest.raises(ValueError, match="gradient"):
        gradient_snr(model, params, x, objective="elbo", gradient="dreg")
