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
    }  # fmt: skip
    assert p["optimizer"] | {} == {
        "name": "adam", "lr": "iwae-paper", "base_lr": 1e-3, "stages": 8, "b1": 0.9, "b2": 0.999, "eps": 1e-4,
    }  # fmt: skip
    vae = PRESETS["iwae-paper-vae"]
    assert vae["train"]["objective"] == "elbo" and vae["init"] == p["init"]


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
