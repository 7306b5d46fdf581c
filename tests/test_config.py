"""TrainConfig: every run setting in one place; train's keywords are overrides it validates."""

from __future__ import annotations

import json

import pytest
import torch

import vaefunc
from vaefunc import TrainConfig
from vaefunc.presets import preset
from vaefunc.schedules import parse

F64 = torch.float64


def _tiny():
    model = vaefunc.VAE((16,), latent_dim=2, hidden=(8,))
    x = torch.rand(96, 16, generator=torch.Generator().manual_seed(0), dtype=F64)
    return model, model.init(seed=0, dtype=F64), x


def test_a_config_and_the_same_keywords_train_identically():
    model, params, x = _tiny()
    config = TrainConfig(epochs=2, batch_size=32, lr=3e-3, kl_schedule="warmup:4", seed=5, compile=False,
                         progress=False)  # fmt: skip
    a = vaefunc.train(params, x, model=model, config=config)
    b = vaefunc.train(params, x, model=model, epochs=2, batch_size=32, lr=3e-3, kl_schedule=vaefunc.linear_warmup(4),
                      seed=5, compile=False, progress=False)  # fmt: skip
    c = vaefunc.train(params, x, model=model, config=config.replace(lr=1e-2))  # negative control
    assert all(torch.equal(a.params[k], b.params[k]) for k in params)
    assert not torch.equal(a.params["encoder.0.weight"], c.params["encoder.0.weight"])
    d = vaefunc.train(params, x, model=model, config=config, lr=1e-2)  # keywords override the config
    assert all(torch.equal(c.params[k], d.params[k]) for k in params)


def test_keywords_are_checked_by_the_config_before_any_work():
    model, params, x = _tiny()
    with pytest.raises(TypeError, match=r"unknown training settings \['epoch'\]"):
        vaefunc.train(params, x, epoch=3)
    with pytest.raises(ValueError, match="lr must be a positive finite number"):
        vaefunc.train(params, x, config=TrainConfig(), lr=-1.0)
    with pytest.raises(TypeError, match="config must be a vaefunc.TrainConfig"):
        vaefunc.train(params, x, config={"epochs": 1})
    with pytest.raises(ValueError, match="train takes one lr"):
        vaefunc.train(params, x, lr=[1e-3, 2e-3])


def test_a_config_round_trips_through_json_with_its_schedules():
    config = TrainConfig(epochs=3, kl_schedule=vaefunc.capacity_annealing(25.0, 1000, gamma=100.0),
                         lr_schedule="iwae-paper:4", adam_eps=1e-4, seed=(1, 2, 3), beta=1.0)  # fmt: skip
    data = json.loads(json.dumps(config.to_dict()))
    assert data["kl_schedule"] == "capacity:100.0:25.0:1000" and data["seed"] == [1, 2, 3]
    assert TrainConfig.from_dict(data) == config
    assert "activation" not in data  # the soft-deprecated model fields are left out at their defaults
    with pytest.raises(ValueError, match="unknown training settings"):
        TrainConfig.from_dict(data | {"epoch": 2})


def test_kl_schedule_specs_name_the_schedules():
    for schedule in (vaefunc.linear_warmup(100, beta=4.0, start=0.5), vaefunc.capacity_annealing(7.0, 10),
                     vaefunc.free_bits(0.5, beta=2.0), vaefunc.constant_beta(3.0)):  # fmt: skip
        again = parse(schedule.spec)
        steps = torch.arange(0, 200, 7)
        assert again.spec == schedule.spec and again.form == schedule.form
        assert torch.equal(again.beta(steps), schedule.beta(steps))
    with pytest.raises(ValueError, match="expected warmup:STEPS"):
        TrainConfig(kl_schedule="linear:100")


def test_a_hand_made_schedule_trains_but_cannot_be_saved():
    schedule = vaefunc.KLSchedule(beta=lambda step: torch.ones_like(step, dtype=torch.float64))
    config = TrainConfig(kl_schedule=schedule)
    assert config.schedule is schedule
    with pytest.raises(TypeError, match="cannot be saved"):
        config.to_dict()


def test_model_fields_in_a_config_describe_the_model_when_none_is_given():
    """The soft-deprecated model fields of a TrainConfig still work, and may not contradict a spec."""
    model, params, x = _tiny()
    kw = dict(epochs=1, batch_size=32, compile=False, progress=False)
    old = vaefunc.train(params, x, config=TrainConfig(activation="tanh", **kw))
    new = vaefunc.train(params, x, model=vaefunc.VAE((16,), latent_dim=2, hidden=(8,), activation="tanh"), **kw)
    assert all(torch.equal(old.params[k], new.params[k]) for k in params)
    with pytest.raises(ValueError, match="activation='tanh' differs from the model's 'relu'"):
        vaefunc.train(params, x, model=model, config=TrainConfig(activation="tanh", **kw))


def test_the_lr_schedule_is_the_named_one():
    model, params, x = _tiny()
    result = vaefunc.train(params, x, model=model, epochs=2, batch_size=32, lr_schedule="iwae-paper:8",
                           compile=False, progress=False)  # fmt: skip
    # Three steps per epoch: the last step (of epoch 2) ran at stage 1, lr = 1e-3 * 10^(-1/7).
    assert float(result.opt_state[1].lr) == pytest.approx(1e-3 * 10 ** (-1 / 7))
    with pytest.raises(ValueError, match="lr_schedule must be None or iwae-paper"):
        TrainConfig(lr_schedule="cosine")


def test_presets_are_a_spec_and_a_config():
    p = preset("iwae-paper", epochs=2)
    assert p.model == {"latent_dim": 50, "hidden": (200, 200), "activation": "tanh", "likelihood": "bernoulli"}
    assert (p.config.objective, p.config.k, p.config.batch_size, p.config.epochs) == ("iwae", 50, 20, 2)
    assert (p.config.lr_schedule, p.config.adam_eps, p.config.binarize) == ("iwae-paper:8", 1e-4, "dynamic")
    vaefunc.VAE((784,), **p.model)
