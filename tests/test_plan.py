"""plan.py: a run's derived facts come from one pure function, and the run reads them from it.

Eager and tiny: nothing here compiles or trains more than setting a run up.
"""

from __future__ import annotations

import pytest
import torch

import vaefunc
from vaefunc import inputs
from vaefunc.plan import check_per_model, plan
from vaefunc.training import setup

CPU = torch.device("cpu")


def test_the_same_inputs_give_equal_records():
    model = vaefunc.VAE((12,), latent_dim=3, hidden=(8,))
    config = vaefunc.TrainConfig(batch_size=16, epochs=3, lr_schedule="iwae-paper:2")
    first = plan(model, config, rows=100, device=CPU)
    again = plan(model, config, rows=100, device=CPU)
    assert first == again and first.step_key(1) == again.step_key(1)
    assert first.optimizer is again.optimizer  # the config's Adam, cached: a later run reuses its step
    assert (first.steps_per_epoch, first.total_steps) == (6, 18)
    assert plan(model, config, rows=160, device=CPU).steps_per_epoch == 10


def test_eps_shape_is_one_steps_noise_and_k_samples_of_it_for_iwae():
    model = vaefunc.VAE((12,), latent_dim=3, hidden=(8,))
    assert plan(model, vaefunc.TrainConfig(batch_size=4), rows=20, device=CPU).eps_shape == (4, 3)
    iwae = plan(model, vaefunc.TrainConfig(batch_size=4, objective="iwae", k=5), rows=20, device=CPU)
    assert iwae.eps_shape == (5, 4, 3) and iwae.step_key().objective == "iwae"


def test_compile_auto_stays_eager_for_a_tiny_short_run_and_follows_an_explicit_choice():
    model = vaefunc.VAE((12,), latent_dim=3, hidden=(8,))
    auto = plan(model, vaefunc.TrainConfig(batch_size=4, compile="auto"), rows=40, device=CPU)
    assert not auto.compiled and not auto.cuda_graph and auto.autocast is None
    assert not auto.step_key(2).compiled and auto.step_key(2).threads == 2
    forced = plan(model, vaefunc.TrainConfig(batch_size=4, compile=True, autocast=None), rows=40, device=CPU)
    assert forced.compiled and not forced.step_key(eager=True).compiled


def test_a_semi_supervised_epoch_counts_the_rows_its_pool_shuffles_and_takes_the_papers_alpha():
    model = vaefunc.VAE((12,), latent_dim=3, hidden=(8,), n_classes=3, semi_supervised=True)
    labels = torch.full((60,), -1)
    labels[:6] = torch.arange(6) % 3  # 6 of 60 labelled: each repeated in the epoch's pool
    y = inputs.prepare_labels(labels, model, n=60, device=CPU, dtype=torch.float32)
    config = vaefunc.TrainConfig(batch_size=8)
    pool, alpha = inputs.semi_supervised_pool(y, model, config)
    facts = plan(model, config, rows=60, device=CPU, labelled=inputs.labelled_rows(y, model))
    assert pool is not None and pool.numel() > 60
    assert facts.steps_per_epoch == pool.numel() // 8 and facts.alpha == alpha
    assert alpha == pytest.approx(vaefunc.paper_alpha(6, 54, inputs.labelled_repeats(6, 54, 0.25)))
    assert plan(model, config.replace(alpha=2.5), rows=60, device=CPU, labelled=6).alpha == 2.5
    with pytest.raises(ValueError, match="labelled="):
        plan(model, config, rows=60, device=CPU)


def test_per_model_settings_are_checked_in_one_place():
    check_per_model({"lr": (1e-3, 1e-4), "beta": 1.0, "seed": (0, 1)}, 2)
    with pytest.raises(ValueError, match="train takes one lr; got 2"):
        check_per_model({"lr": (1e-3, 1e-4)}, None)
    with pytest.raises(ValueError, match=r"beta must be a number or 3 numbers \(one per model\); got shape \(2,\)"):
        check_per_model({"beta": [1.0, 2.0]}, 3)
    with pytest.raises(TypeError, match="seed must be"):
        check_per_model({"seed": "01"}, 2)
    model = vaefunc.VAE((12,), latent_dim=3, hidden=(8,))
    with pytest.raises(ValueError, match="train takes one beta"):
        plan(model, vaefunc.TrainConfig(beta=(1.0, 2.0)), rows=200, device=CPU)


def test_the_run_setup_builds_reads_its_plan():
    model = vaefunc.VAE((12,), latent_dim=3, hidden=(8,))
    x = torch.rand(50, 12, generator=torch.Generator().manual_seed(0))
    config = vaefunc.TrainConfig(batch_size=8, epochs=2, objective="iwae", k=2, compile=False, threads=1)
    run = setup(model.init(seed=0), x, model=model, config=config)
    assert run.plan == plan(model, config, rows=50, device=CPU)
    assert run.feed.steps == run.plan.steps_per_epoch == 6 and run.feed.eps_shape == run.plan.eps_shape
    assert tuple(run.feed.draw(0).eps.shape) == (6, 2, 8, 3)
