"""KL schedules: their values at given steps, the loss forms they select, and that
changing values never recompile the compiled step."""

from __future__ import annotations

import math

import pytest
import torch

import vaefunc
from vaefunc.schedules import (
    KLSchedule,
    capacity_annealing,
    constant_beta,
    free_bits,
    iwae_paper_epochs,
    iwae_paper_lr,
    linear_warmup,
    schedule_values,
)

F64 = torch.float64
STEPS = torch.tensor([0, 1, 50, 99, 100, 101, 10_000])


def _close(got, want):
    torch.testing.assert_close(got, torch.tensor(want, dtype=F64))


def test_constant_beta():
    beta, cap = schedule_values(constant_beta(4.0), STEPS)
    _close(beta, [4.0] * 7)
    _close(cap, [0.0] * 7)
    assert constant_beta().form == "beta"


def test_linear_warmup():
    s = linear_warmup(100)
    _close(s.beta(STEPS), [0.0, 0.01, 0.5, 0.99, 1.0, 1.0, 1.0])
    _close(linear_warmup(100, beta=2.0, start=0.5).beta(STEPS), [0.5, 0.515, 1.25, 1.985, 2.0, 2.0, 2.0])
    assert s.form == "beta" and s.capacity is None


def test_capacity_annealing():
    s = capacity_annealing(25.0, 100, gamma=1000.0)
    beta, cap = schedule_values(s, STEPS)
    _close(beta, [1000.0] * 7)
    _close(cap, [0.0, 0.25, 12.5, 24.75, 25.0, 25.0, 25.0])
    assert s.form == "capacity"


def test_free_bits():
    s = free_bits(0.5)
    _close(s.beta(STEPS), [1.0] * 7)
    assert s.form == "free_bits" and s.free_bits == 0.5


def test_values_keep_the_step_shape_and_check_it():
    for s in (constant_beta(2.0), linear_warmup(10), capacity_annealing(5.0, 10), free_bits(0.1)):
        for step in (torch.tensor(3), torch.arange(4)):
            beta, cap = schedule_values(s, step)
            assert beta.shape == step.shape == cap.shape and beta.dtype == F64
    with pytest.raises(TypeError, match="int64"):
        linear_warmup(10).beta(torch.tensor([1.0]))
    with pytest.raises(TypeError, match="int64"):
        linear_warmup(10).beta(3)
    for bad in (lambda: linear_warmup(0), lambda: constant_beta(-1.0), lambda: free_bits(0.0),
                lambda: capacity_annealing(math.inf, 10)):  # fmt: skip
        with pytest.raises(ValueError):
            bad()


def test_iwae_paper_learning_rate():
    lr = iwae_paper_lr(10)  # 10 steps per epoch; stage i lasts 3^i epochs
    epochs = torch.tensor([0, 1, 3, 4, 12, 13, 39, 40, 1092, 1093, 3279, 5000])
    stage = torch.tensor([0, 1, 1, 2, 2, 3, 3, 4, 6, 7, 7, 7], dtype=F64)
    torch.testing.assert_close(lr(epochs * 10 + 9), 1e-3 * 10 ** (-stage / 7))
    assert iwae_paper_epochs() == 3280


def test_loss_forms():
    model = vaefunc.VAE((6,), latent_dim=3, hidden=(5,))
    params = model.init(0, dtype=F64)
    gen = torch.Generator().manual_seed(0)
    x, eps = torch.rand(8, 6, generator=gen, dtype=F64), torch.randn(8, 3, generator=gen, dtype=F64)
    rec, kl = model.elbo_terms(params, x, eps)
    _, kl_dims = model.elbo_terms(params, x, eps, per_dim=True)
    rec, kl = rec.mean(), kl.mean()
    beta, cap = torch.tensor(0.3, dtype=F64), torch.tensor(7.0, dtype=F64)
    loss, metrics = model.loss(kl_schedule=linear_warmup(10))(params, x, eps, beta, cap)
    torch.testing.assert_close(loss, 0.3 * kl - rec)
    torch.testing.assert_close(metrics["elbo"], rec - kl)
    loss, _ = model.loss(kl_schedule=capacity_annealing(7.0, 10))(params, x, eps, beta, cap)
    torch.testing.assert_close(loss, 0.3 * (kl - 7.0).abs() - rec)
    lam = float(kl_dims.mean(0).median())  # some dimensions below lambda, some above
    loss, metrics = model.loss(kl_schedule=free_bits(lam))(params, x, eps, beta, cap)
    torch.testing.assert_close(loss, 0.3 * kl_dims.mean(0).clamp(min=lam).sum() - rec)
    torch.testing.assert_close(metrics["kl"], kl)
    with pytest.raises(TypeError, match="KLSchedule"):
        model.loss(kl_schedule=0.5)
    with pytest.raises(ValueError, match="iwae"):
        model.loss("iwae", kl_schedule=linear_warmup(10))


# Inductor's own import of torch.jit warns on torch 2.13; that is torch's, not ours.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.compile
def test_changing_schedule_values_never_recompile():
    # The one compiled test of this module: a tiny model, a few steps. Every step
    # after the first gets new (beta, capacity) values, from a new epoch's tensor
    # too; with recompilation made an error, any recompile fails the run.
    x = torch.rand(48, 6, generator=torch.Generator().manual_seed(0))
    params = vaefunc.VAE((6,), latent_dim=2, hidden=(4,)).init(0)
    seen = []

    def should_stop():  # polled after every step: the first step has compiled by now
        torch.compiler.set_stance("fail_on_recompile")
        seen.append(1)
        return False

    torch._dynamo.reset()
    try:
        for schedule in (capacity_annealing(3.0, 5, gamma=2.0),):
            result = vaefunc.train(
                params, x, epochs=2, batch_size=16, kl_schedule=schedule, compile=True, progress=False,
                should_stop=should_stop,
            )  # fmt: skip
    finally:
        torch.compiler.set_stance("default")
    assert len(seen) == 6 and all(math.isfinite(h["loss"]) for h in result.history)
    assert isinstance(schedule, KLSchedule)
