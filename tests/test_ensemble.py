"""vaefunc.ensemble: stacked params, and every member of train_many equals its single run."""

from __future__ import annotations

import math

import pytest
import torch

import vaefunc
from vaefunc.ensemble import ensemble_size

D, Z, H, N, B = 64, 4, (32,), 96, 16
"""A small model on purpose: at these sizes MKL's batched matmul (which vmap over
the models calls) takes the same path as the single-model matmul, so float64
results are bit for bit equal (see the README: larger matmuls can differ in the
last bit)."""


def _data(dtype=torch.float64, n=N):
    return torch.rand(n, D, generator=torch.Generator().manual_seed(123), dtype=dtype)


def _max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_init_many_members_are_init_with_consecutive_seeds():
    stacked = vaefunc.init_many(3, (D,), latent_dim=Z, hidden=H, seed=5)
    assert ensemble_size(stacked) == 3
    for i, member in enumerate(vaefunc.unstack(stacked)):
        ref = vaefunc.VAE((D,), latent_dim=Z, hidden=H).init(5 + i)
        assert list(member) == list(ref)
        for k in ref:
            assert torch.equal(member[k], ref[k])


def test_stack_unstack_round_trip_and_errors():
    models = [vaefunc.VAE((D,), latent_dim=Z, hidden=H).init(s) for s in range(2)]
    back = vaefunc.unstack(vaefunc.stack(models))
    assert all(torch.equal(back[i][k], models[i][k]) for i in range(2) for k in models[0])
    with pytest.raises(TypeError, match="non-empty sequence"):
        vaefunc.stack([])
    with pytest.raises(ValueError, match="one shape"):
        vaefunc.stack([models[0], vaefunc.VAE((D,), latent_dim=Z + 1, hidden=H).init()])
    with pytest.raises(ValueError, match="same keys"):
        vaefunc.stack([models[0], dict(reversed(list(models[1].items())))])
    with pytest.raises(ValueError, match="leading ensemble axis"):
        vaefunc.unstack({"a": torch.zeros(2, 3), "b": torch.zeros(3, 3)})


def _check_members_equal_single_runs(dtype, *, seed, beta, lr, binarize=None, atol=0.0):
    stacked = vaefunc.init_many(3, (D,), latent_dim=Z, hidden=H, seed=0, dtype=dtype)
    data = _data(dtype)
    kw = dict(epochs=2, batch_size=B, binarize=binarize, compile=False, progress=False)
    result = vaefunc.train_many(stacked, data, lr=lr, beta=beta, seed=seed, **kw)
    for i, member in enumerate(vaefunc.unstack(stacked)):
        pick = lambda v: v[i] if isinstance(v, list) else v  # noqa: E731
        alone = vaefunc.train(member, data, lr=pick(lr), beta=pick(beta), seed=pick(seed), **kw)
        for k in member:
            torch.testing.assert_close(result.params[k][i], alone.params[k], rtol=0, atol=atol)
        for key in ("loss", "recon", "kl", "elbo"):
            assert result.history[i][-1][key] == pytest.approx(alone.history[-1][key], rel=0, abs=atol * 1e3)
    # The inputs are untouched.
    fresh = vaefunc.VAE((D,), latent_dim=Z, hidden=H).init(0, dtype=dtype)
    assert torch.equal(stacked["encoder.0.weight"][0], fresh["encoder.0.weight"])
    return result


def test_beta_sweep_members_equal_single_runs_bit_for_bit_float64():
    # A scalar seed: common data order and noise for all members, as train(seed=0).
    result = _check_members_equal_single_runs(torch.float64, seed=0, beta=[0.5, 2.0, 8.0], lr=3e-3)
    kls = [h[-1]["kl"] for h in result.history]
    assert kls[0] > kls[1] > kls[2]  # a larger beta buys a smaller KL


def test_per_model_seeds_and_lrs_equal_single_runs_bit_for_bit_float64():
    _check_members_equal_single_runs(torch.float64, seed=[3, 4, 5], beta=1.0, lr=[1e-3, 3e-3, 1e-2], binarize="dynamic")


def test_members_equal_single_runs_float32():
    _check_members_equal_single_runs(torch.float32, seed=[0, 1, 2], beta=[0.5, 1.0, 4.0], lr=1e-3, atol=1e-5)


def test_member_differs_from_a_run_with_another_seed():
    """Negative control: the equality check above can fail."""
    stacked = vaefunc.init_many(2, (D,), latent_dim=Z, hidden=H, dtype=torch.float64)
    kw = dict(epochs=1, batch_size=B, compile=False, progress=False)
    result = vaefunc.train_many(stacked, _data(), seed=[0, 1], **kw)
    other = vaefunc.train(vaefunc.unstack(stacked)[1], _data(), seed=0, **kw)
    assert _max_diff({k: v[1] for k, v in result.params.items()}, other.params) > 1e-6


def test_auto_compile_counts_all_models_and_runs_a_short_cpu_sweep_eagerly(monkeypatch):
    """compile="auto" (the default) applies train's rule to one model's FLOPs times m: a short CPU run is eager."""
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("a short CPU run must not compile"))
    stacked = vaefunc.init_many(2, (D,), latent_dim=Z, hidden=H, dtype=torch.float64)
    auto = vaefunc.train_many(stacked, _data(), epochs=1, batch_size=B, progress=False)
    eager = vaefunc.train_many(stacked, _data(), epochs=1, batch_size=B, compile=False, progress=False)
    assert all(torch.equal(auto.params[k], eager.params[k]) for k in stacked)


def test_members_train_with_the_activation_they_are_given():
    stacked = vaefunc.init_many(2, (D,), latent_dim=Z, hidden=H, dtype=torch.float64)
    kw = dict(epochs=1, batch_size=B, compile=False, progress=False)
    result = vaefunc.train_many(stacked, _data(), activation="tanh", **kw)
    alone = vaefunc.train(vaefunc.unstack(stacked)[1], _data(), activation="tanh", **kw)
    for k in alone.params:
        torch.testing.assert_close(result.params[k][1], alone.params[k], rtol=0, atol=0)
    relu = vaefunc.train(vaefunc.unstack(stacked)[1], _data(), **kw)  # negative control
    assert _max_diff(relu.params, alone.params) > 1e-6


def test_opt_state_continues_training():
    stacked = vaefunc.init_many(2, (D,), latent_dim=Z, hidden=H, dtype=torch.float64)
    kw = dict(batch_size=B, compile=False, progress=False, lr=[1e-3, 2e-3])
    first = vaefunc.train_many(stacked, _data(), epochs=1, **kw)
    more = vaefunc.train_many(first.params, _data(), epochs=1, opt_state=first.opt_state, **kw)
    assert int(more.opt_state[0].count) == 2 * (N // B)
    assert more.opt_state[1].lr.shape == (2,)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lr": [1e-3, 1e-3]}, ValueError, "lr must be a number or 3 numbers"),
        ({"lr": [1e-3, 0.0, 1e-3]}, ValueError, "lr must be finite numbers > 0"),
        ({"beta": [1.0, -1.0, 1.0]}, ValueError, "beta must be finite numbers >= 0"),
        ({"beta": "big"}, TypeError, "beta must be a number or 3 numbers"),
        ({"seed": [0, 1]}, ValueError, "seed must be a non-negative int or 3"),
        ({"seed": -1}, ValueError, "seed must be an int >= 0"),
        ({"batch_size": N + 1}, ValueError, "batch_size must be at most"),
        ({"likelihood": "poisson"}, ValueError, "likelihood must be one of"),
    ],
)
def test_bad_input_raises_before_work(kwargs, error, match):
    stacked = vaefunc.init_many(3, (D,), latent_dim=Z, hidden=H)
    with pytest.raises(error, match=match):
        kw = {"epochs": 1, "batch_size": B, "progress": False} | kwargs
        vaefunc.train_many(stacked, _data(torch.float32), **kw)


def test_non_finite_loss_names_the_model_and_keeps_the_last_finite_state():
    stacked = vaefunc.init_many(2, (D,), latent_dim=Z, hidden=H, dtype=torch.float64)
    with pytest.raises(vaefunc.NonFiniteLossError, match=r"model\(s\) \[1\].*epoch 1, step") as info:
        vaefunc.train_many(stacked, _data(), epochs=1, batch_size=B, lr=[1e-3, 1e300], compile=False, progress=False)
    assert all(bool(torch.isfinite(v).all()) for v in info.value.params.values())


# ------------------------------------------------------------------ every feature of train, for ensembles


def _member_equals_lone_run(stacked, data, *, seed, **kw):
    """Every member of train_many equals its lone train run with the same settings, bit for bit (float64)."""
    kw = dict(epochs=2, batch_size=B, compile=False, progress=False) | kw
    result = vaefunc.train_many(stacked, data, seed=seed, **kw)
    for i, member in enumerate(vaefunc.unstack(stacked)):
        pick = lambda v: v[i] if isinstance(v, list) else v  # noqa: E731
        alone = vaefunc.train(member, data, seed=pick(seed), **{k: pick(v) for k, v in kw.items()})
        assert set(result.params) == set(alone.params)
        for k in alone.params:
            torch.testing.assert_close(result.params[k][i], alone.params[k], rtol=0, atol=0, msg=f"member {i} {k}")
        assert result.history[i][-1]["loss"] == alone.history[-1]["loss"]
    return result


@pytest.mark.parametrize("seed", [0, [3, 4]])
def test_conditional_members_equal_lone_runs(seed):
    """labels= reach every member: shared batches, or each member's own (the labels follow the data's index)."""
    stacked = vaefunc.init_many(2, (D,), latent_dim=Z, hidden=H, n_classes=3, seed=0, dtype=torch.float64)
    y = torch.randint(0, 3, (N,), generator=torch.Generator().manual_seed(5))
    _member_equals_lone_run(stacked, _data(), seed=seed, labels=y)


def test_iwae_members_equal_lone_runs():
    stacked = vaefunc.init_many(2, (D,), latent_dim=Z, hidden=H, seed=0, dtype=torch.float64)
    _member_equals_lone_run(stacked, _data(), seed=[1, 2], objective="iwae", k=3, lr=[1e-3, 3e-3])


@pytest.mark.parametrize("schedule", [vaefunc.linear_warmup(5), vaefunc.capacity_annealing(2.0, 5, gamma=10.0),
                                      vaefunc.free_bits(0.2)])
def test_kl_schedule_members_equal_lone_runs(schedule):
    stacked = vaefunc.init_many(2, (D,), latent_dim=Z, hidden=H, seed=0, dtype=torch.float64)
    _member_equals_lone_run(stacked, _data(), seed=0, kl_schedule=schedule, binarize="dynamic")


@pytest.mark.parametrize("per", ["global", "pixel"])
def test_learned_obs_std_members_equal_lone_runs(per):
    model = vaefunc.VAE((D,), latent_dim=Z, hidden=H, likelihood="gaussian", learn_obs_std=per, obs_std=0.5)
    stacked = vaefunc.init_many(2, model=model, seed=0, dtype=torch.float64)
    result = _member_equals_lone_run(stacked, _data(), seed=[0, 1], model=model)
    assert result.params["likelihood.logstd"].shape == (2,) + ((D,) if per == "pixel" else ())
    # the legacy keywords add the log-std to params that lack it, for every member
    plain = vaefunc.init_many(2, (D,), latent_dim=Z, hidden=H, seed=0, dtype=torch.float64)
    legacy = vaefunc.train_many(plain, _data(), epochs=1, batch_size=B, progress=False, compile=False,
                                likelihood="gaussian", learn_obs_std=per)  # fmt: skip
    assert legacy.params["likelihood.logstd"].shape == result.params["likelihood.logstd"].shape


@pytest.mark.parametrize("stop_at", [2, 7])  # mid-epoch 1; mid-epoch 2
def test_an_interrupted_ensemble_resumes_bit_for_bit(stop_at):
    stacked = vaefunc.init_many(3, (D,), latent_dim=Z, hidden=H, seed=0, dtype=torch.float64)
    kw = dict(epochs=2, batch_size=B, compile=False, progress=False, seed=[0, 1, 2], beta=[0.5, 1.0, 2.0],
              binarize="dynamic")  # fmt: skip
    full = vaefunc.train_many(stacked, _data(), **kw)
    calls = iter(range(1, 100))
    part = vaefunc.train_many(stacked, _data(), should_stop=lambda: next(calls) >= stop_at, **kw)
    assert part.interrupted and part.state.sums.shape == (3, 4)
    assert part.state.rng["noise"].shape[0] == 3  # each member's generator state
    rest = vaefunc.train_many(part.params, _data(), resume=part.state, **kw)
    for k in full.params:
        assert torch.equal(rest.params[k], full.params[k]), k
    assert [h[-1]["loss"] for h in rest.history] == [h[-1]["loss"] for h in full.history]


def test_an_ensemble_checkpoint_resumes_bit_for_bit(tmp_path):
    model = vaefunc.VAE((D,), latent_dim=Z, hidden=H)
    stacked = vaefunc.init_many(2, model=model, seed=0, dtype=torch.float64)
    kw = dict(model=model, batch_size=B, compile=False, progress=False, seed=[0, 1])
    full = vaefunc.train_many(stacked, _data(), epochs=2, **kw)
    first = vaefunc.train_many(stacked, _data(), epochs=1, **kw)
    vaefunc.save(tmp_path / "m.safetensors", first.params, model=model, state=first.state)
    ckpt = vaefunc.load(tmp_path / "m.safetensors")
    assert ckpt.model == model
    rest = vaefunc.train_many(ckpt.params, _data(), epochs=2, resume=ckpt.state, **kw)
    assert all(torch.equal(rest.params[k], full.params[k]) for k in full.params)


def test_on_epoch_gets_every_members_entry_and_a_resumable_state():
    stacked = vaefunc.init_many(2, (D,), latent_dim=Z, hidden=H, seed=0, dtype=torch.float64)
    seen = []
    result = vaefunc.train_many(stacked, _data(), epochs=2, batch_size=B, compile=False, progress=False,
                                on_epoch=lambda entries, state: seen.append((entries, state)))  # fmt: skip
    assert [len(entries) for entries, _ in seen] == [2, 2]
    assert [entries[1]["epoch"] for entries, _ in seen] == [1, 2]
    assert seen[-1][1].epoch == 2 and all(torch.equal(seen[-1][1].params[k], result.params[k]) for k in stacked)


def test_the_finite_check_covers_the_optimizer_state():
    """A member whose Adam second moment overflows is caught, though its loss and params are finite then:
    a state broken before the run is refused before the first step, naming the leaf."""
    stacked = vaefunc.init_many(2, (D,), latent_dim=Z, hidden=H, seed=0, dtype=torch.float64)
    opt_state = vaefunc.adam(1e-3).init(stacked)
    opt_state[0].nu["decoder.0.bias"][1, 0] = math.inf  # member 1's state is already broken
    with pytest.raises(ValueError, match=r"opt_state must be finite; got NaN or inf in '0.nu.decoder.0.bias'"):
        vaefunc.train_many(stacked, _data(), opt_state=opt_state, epochs=1, batch_size=B, compile=False,
                           progress=False)  # fmt: skip
    params, state = stacked, vaefunc.adam(1e-3).init(stacked)
    state[0].nu["decoder.0.bias"][1, 0] = math.inf
    assert vaefunc.loop.bad_members(torch.zeros(2), params, state, 2) == [1]


@pytest.mark.parametrize("make", [lambda: vaefunc.sgd(0.05), lambda: vaefunc.adam(1e-2)], ids=["sgd", "adam"])
def test_train_many_takes_an_optimizer_as_train_does(make):
    """optimizer= replaces the default Adam for every member: each equals its lone train(..., optimizer=)
    run, and differs from the default-Adam run (so the keyword is not ignored)."""
    model = vaefunc.VAE((D,), latent_dim=Z, hidden=H)
    members = [model.init(seed=s, dtype=torch.float64) for s in (0, 1)]
    kw = dict(model=model, epochs=1, batch_size=B, compile=False, progress=False, seed=3)
    result = vaefunc.train_many(vaefunc.stack(members), _data(), optimizer=make(), **kw)
    for i, member in enumerate(members):
        alone = vaefunc.train(member, _data(), optimizer=make(), **kw)
        assert _max_diff(vaefunc.unstack(result.params)[i], alone.params) < 1e-12
    default = vaefunc.train_many(vaefunc.stack(members), _data(), **kw)
    assert _max_diff(default.params, result.params) > 1e-6
