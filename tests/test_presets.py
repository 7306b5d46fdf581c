"""Presets: the IWAE paper's setting as plain data, turned into init and train arguments."""

from __future__ import annotations

import pytest
import torch

import vaefunc
from vaefunc.presets import PRESETS, preset_train_kwargs


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
