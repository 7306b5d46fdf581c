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


# ------------------------------------------------------------------ 2. models accepted that cannot run


def test_a_conditional_vamp_prior_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"prior='vamp' needs an unconditional model \(n_classes=0\)"):
        vaefunc.VAE((16,), latent_dim=2, hidden=(8,), n_classes=3, prior="vamp")
    with pytest.raises(ValueError, match="prior='vamp' needs an unconditional model"):
        vaefunc.VAE((16,), latent_dim=2, hidden=(8,), n_classes=3, semi_supervised=True, prior="vamp")


def test_semi_supervised_vamp_on_the_command_line_is_one_line_exit_2(tmp_path, capsys):
    from vaefunc import cli

    code = cli.main(["train", "--data", "digits", "--semi-supervised", "--n-classes", "10", "--prior", "vamp",
                     "--out", str(tmp_path / "run"), "--epochs", "1", "--progress", "never"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "prior='vamp' needs an unconditional model" in err and err.count("\n") == 1, err


def test_nan_params_are_refused_before_the_first_step_not_blamed_on_the_lr():
    params = MODEL.init()
    params["encoder.0.bias"][0] = math.nan
    with pytest.raises(ValueError, match=r"params must be finite; got NaN or inf in 'encoder.0.bias' before training"):
        vaefunc.train(params, _x(), model=MODEL, epochs=1, batch_size=32, progress=False)
    with pytest.raises(ValueError, match="params must be finite"):
        vaefunc.train_many(vaefunc.stack([params, MODEL.init()]), _x(), model=MODEL, epochs=1, batch_size=32,
                           progress=False)  # fmt: skip


def test_a_corrupt_optimizer_state_is_refused_before_the_first_step():
    params = MODEL.init()
    opt_state = vaefunc.adam(1e-3).init(params)
    opt_state[0].nu["decoder.0.weight"][0, 0] = math.inf
    with pytest.raises(ValueError, match=r"opt_state must be finite; got NaN or inf in '0.nu.decoder.0.weight'"):
        vaefunc.train(params, _x(), model=MODEL, epochs=1, batch_size=32, progress=False, opt_state=opt_state)


def test_a_nan_resume_state_is_refused_before_the_first_step():
    state = vaefunc.train(MODEL.init(), _x(), model=MODEL, epochs=1, batch_size=32, progress=False).state
    state.params["decoder.2.bias"][:] = math.nan
    with pytest.raises(ValueError, match="params must be finite"):
        vaefunc.train(MODEL.init(), _x(), model=MODEL, epochs=2, batch_size=32, progress=False, resume=state)
