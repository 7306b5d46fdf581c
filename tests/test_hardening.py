"""Hardening, second pass: inputs nobody listed in the first pass (tests/test_adversarial.py).

Each case is either a clear TypeError/ValueError (CheckpointError, DatasetError; on the command line
exit 2 with one line) from :mod:`vaefunc._check`'s one message style, or a correct result.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import vaefunc

MODEL = vaefunc.VAE((16,), latent_dim=2, hidden=(8,))


def _x(n=64, d=16, seed=1):
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ 1. silent results


def test_the_on_epoch_state_is_a_copy_that_cannot_edit_the_result():
    seen = []

    def zero(entry, state):
        for v in state.params.values():
            v.zero_()
        seen.append(state)

    result = vaefunc.train(MODEL.init(), _x(), model=MODEL, epochs=2, batch_size=32, progress=False, on_epoch=zero)
    assert len(seen) == 2
    assert all(bool(v.abs().sum() > 0) for v in result.params.values())
    assert all(bool(v.abs().sum() > 0) for v in result.state.params.values())


@pytest.mark.parametrize(("kw", "match"), [
    ({"per_dim": True}, "per_dim needs a closed-form KL"),
    ({"kl": "closed"}, "kl='closed' needs the standard normal prior"),
    ({"kl": "bogus"}, r"kl must be one of \('auto', 'closed', 'mc'\); got 'bogus'"),
])  # fmt: skip
def test_a_mog_prior_refuses_kl_settings_it_cannot_honour(kw, match):
    model = vaefunc.VAE((16,), latent_dim=2, hidden=(8,), prior="mog")
    with pytest.raises(ValueError, match=match):
        model.elbo_terms(model.init(), _x(3), torch.randn(3, 2), **kw)


def test_kl_bogus_is_refused_for_the_normal_prior_too():
    with pytest.raises(ValueError, match="kl must be one of"):
        MODEL.elbo(MODEL.init(), _x(3), torch.randn(3, 2), kl="bogus")


def test_unstack_of_one_models_params_is_refused():
    model = vaefunc.VAE((2,), latent_dim=1, hidden=(2,))  # every leaf leads with 2: it looks like m=2
    with pytest.raises(ValueError, match=r"params_stack must be stacked params .*; got one model's params"):
        vaefunc.unstack(model.init())
    members = vaefunc.unstack(vaefunc.init_many(3, model=model))
    assert len(members) == 3 and members[0]["encoder.0.bias"].shape == (2,)
