"""training.py (vaefunc.train): it learns real digits, equals an nn.Module + torch.optim.Adam loop on
the same batches and noise, rejects bad input before any step, keeps the last
finite state on a non-finite loss, resumes bit for bit, and is pure and seeded."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import vaefunc
from vaefunc.rng import make_streams
from vaefunc.training import AUTO_COMPILE_MIN_SECONDS, compiles_for_params
from tests import oracles
from tests import strategies as S

F64 = torch.float64
QUIET = dict(progress=False, compile=False)


def _tiny(seed: int = 0, n: int = 96, d: int = 16, dtype=torch.float32):
    params = vaefunc.VAE((d,), latent_dim=2, hidden=(8,)).init(seed, dtype=dtype)
    return params, S.rand(seed + 100, n, d, dtype=dtype)


def _neg_elbo(params, x, seed=0):
    """Test-set negative ELBO in nats per example, with fixed eps."""
    eps = torch.randn(x.shape[0], params["decoder.0.weight"].shape[1], generator=S.generator(seed))
    with torch.no_grad():
        return float(-vaefunc.VAE.from_params(params).elbo(params, x, eps).mean())


@pytest.mark.slow
def test_training_on_real_digits_lowers_the_test_loss(mnist5k):
    x_train, _, x_test, _ = mnist5k
    params = vaefunc.VAE((784,), latent_dim=8, hidden=(64,)).init(0)
    before = _neg_elbo(params, x_test)
    result = vaefunc.train(params, x_train, epochs=3, batch_size=100, lr=2e-3, seed=0, **QUIET)
    after = _neg_elbo(result.params, x_test)
    losses = [h["loss"] for h in result.history]
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert losses[0] > losses[1] > losses[2], losses
    # From ~545 nats (random decoder) to well under 250: it has learned the digits.
    assert before > 500 and after < 250, (before, after)
    assert abs(after - losses[-1]) < 30  # the test loss is close to the training loss: no bug in eval


def _oracle_train(params, x, *, epochs, batch_size, lr, beta, seed, likelihood="bernoulli"):
    """vaefunc.train rewritten as an ordinary PyTorch loop: nn.Module, autograd, torch.optim.Adam.

    It reproduces train's random streams: per epoch one randperm from the data
    stream (last partial batch dropped) and one randn of all the epoch's eps from
    the noise stream.
    """
    d, z = x.shape[1], params["decoder.0.weight"].shape[1]
    hidden = tuple(params[k].shape[0] for k in params if k.startswith("encoder.") and k.endswith("weight"))[:-1]
    model = oracles.VAE(d, z, hidden).to(x.dtype)
    model.load_state_dict(params)
    opt = torch.optim.Adam(model.parameters(), lr=lr, foreach=False)
    streams = make_streams(seed)
    n = x.shape[0]
    steps = n // batch_size
    for _ in range(epochs):
        perm = torch.randperm(n, generator=streams.data)[: steps * batch_size].view(steps, batch_size)
        eps = torch.randn(steps, batch_size, z, generator=streams.noise, dtype=x.dtype)
        for i in range(steps):
            rec, kl = model(x[perm[i]], eps[i], likelihood=likelihood)
            loss = beta * kl.mean() - rec.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {k: v.detach() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_train_equals_an_nn_module_with_torch_adam(mnist5k, likelihood):
    x = mnist5k[0][:500].to(F64)
    params = vaefunc.VAE((784,), latent_dim=4, hidden=(32,)).init(1, dtype=F64)
    kw = dict(epochs=2, batch_size=40, lr=3e-3, beta=0.8, seed=11, likelihood=likelihood)
    result = vaefunc.train(params, x, **kw, **QUIET)
    expected = _oracle_train(params, x, **kw)
    assert len(result.history) == 2 and int(result.opt_state[0].count) == 2 * (500 // 40)
    for k in params:
        torch.testing.assert_close(result.params[k], expected[k], rtol=1e-9, atol=1e-10, msg=k)
    # Not vacuous: the params moved far more than the tolerance.
    assert float((result.params["encoder.0.weight"] - params["encoder.0.weight"]).abs().max()) > 1e-3


# ----------------------------------------------------------------------- bad input


def _drop(params, key):
    return {k: v for k, v in params.items() if k != key}


def _with(params, key, value):
    return params | {key: value}


def _case(**kw):
    """(params transform, data transform, train kwargs)."""
    return (kw.pop("params", lambda p: p), kw.pop("data", lambda x: x), kw)


BAD_INPUTS = {
    # data
    "nan data": (_case(data=lambda x: _with_at(x, 3, math.nan)), ValueError, r"data must be finite; got 1 NaN or inf"),
    "inf data": (_case(data=lambda x: _with_at(x, 5, math.inf), likelihood="gaussian"), ValueError, r"must be finite; got 1 NaN"),
    "data above 1": (_case(data=lambda x: x * 3), ValueError, r"must lie in \[0, 1\] for the Bernoulli likelihood; got values in \[0\.\d+, 2\.\d+\]"),
    "data below 0": (_case(data=lambda x: x - 0.5), ValueError, r"must lie in \[0, 1\].*got values in \[-0\.\d+, 0\.\d+\]"),
    "wrong trailing shape": (_case(data=lambda x: x[:, :15]), ValueError, r"with 16 features per example.*got \(96, 15\)"),
    "1-d data": (_case(data=lambda x: x[0]), ValueError, r"shape \(n, \*input_shape\) with 16 features.*got \(16,\)"),
    "empty data": (_case(data=lambda x: x[:0]), ValueError, r"data is empty: got 0 examples"),
    "integer data": (_case(data=lambda x: (x * 255).to(torch.uint8)), TypeError, r"data must be floating point.*got dtype torch.uint8"),
    "list data": (_case(data=lambda x: x.tolist()), TypeError, r"data must be a torch.Tensor or numpy.ndarray.*got list"),
    # options
    "batch_size 0": (_case(batch_size=0), ValueError, r"batch_size must be an int >= 1; got 0"),
    "batch_size > n": (_case(batch_size=97), ValueError, r"batch_size must be at most the number of examples \(96\); got 97"),
    "negative epochs": (_case(epochs=-1), ValueError, r"epochs must be an int >= 0; got -1"),
    "float epochs": (_case(epochs=2.0), ValueError, r"epochs must be an int >= 0; got 2.0"),
    "lr 0": (_case(lr=0.0), ValueError, r"lr must be a positive finite number; got 0.0"),
    "lr negative": (_case(lr=-1e-3), ValueError, r"lr must be a positive finite number; got -0.001"),
    "lr nan": (_case(lr=math.nan), ValueError, r"lr must be a positive finite number; got nan"),
    "lr inf": (_case(lr=math.inf), ValueError, r"lr must be a positive finite number; got inf"),
    "lr string": (_case(lr="1e-3"), ValueError, r"lr must be a positive finite number; got '1e-3'"),
    "unknown likelihood": (_case(likelihood="poisson"), ValueError, r"likelihood must be one of \('bernoulli', 'gaussian', 'continuous_bernoulli'\); got 'poisson'"),
    "negative beta": (_case(beta=-1.0), ValueError, r"beta must be a finite number >= 0.0; got -1.0"),
    # params
    "params not a dict": (_case(params=lambda p: list(p.values())), TypeError, r"params must be a dict of tensors.*got list"),
    "missing key": (_case(params=lambda p: _drop(p, "decoder.0.bias")), ValueError, r"params is missing 'decoder.0.bias'; expected the keys vaefunc.init makes, got \["),
    "missing last layer": (_case(params=lambda p: _drop(_drop(p, "decoder.2.weight"), "decoder.2.bias")), ValueError, r"decoder must output the 16 features the encoder reads; got 8"),
    "non-tensor leaf": (_case(params=lambda p: _with(p, "encoder.0.bias", [0.0] * 8)), TypeError, r"params must map str keys to tensors; got str -> list at 'encoder.0.bias'"),
    "mismatched shapes": (_case(params=lambda p: _with(p, "encoder.2.weight", torch.zeros(4, 7))), ValueError, r"encoder.2: expected weight \(out, 8\) and bias \(out,\); got weight \(4, 7\) and bias \(4,\)"),
    "wrong latent width": (_case(params=lambda p: _with(_with(p, "encoder.2.weight", torch.zeros(5, 8)), "encoder.2.bias", torch.zeros(5))), ValueError, r"encoder must output 2 \* latent_dim = 4 values \(mu, logvar\); got 5"),
    "mixed dtypes": (_case(params=lambda p: _with(p, "decoder.0.bias", p["decoder.0.bias"].double())), TypeError, r"one floating-point dtype; got \['torch.float32', 'torch.float64'\]"),
    "integer params": (_case(params=lambda p: {k: v.long() for k, v in p.items()}), TypeError, r"one floating-point dtype; got \['torch.int64'\]"),
    "foreign opt_state": (_case(opt_state="adam"), TypeError, r"opt_state must be the state of vaefunc.adam.*got str"),
    "obs_std 0": (_case(likelihood="gaussian", obs_std=0.0), ValueError, r"obs_std must be a finite number > 0.0; got 0.0"),
    "unknown binarize": (_case(binarize="soft"), ValueError, r"binarize must be one of \(None, 'dynamic', 'static'\); got 'soft'"),
    "unknown compile": (_case(compile="yes"), ValueError, r"compile must be True, False or 'auto'; got 'yes'"),
    "unknown activation": (_case(activation="sigmoid"), ValueError, r"activation must be one of \('relu', 'tanh', 'elu', 'softplus', 'gelu', 'silu'\); got 'sigmoid'"),
    "mixed devices": (_case(params=lambda p: _with(p, "decoder.0.bias", p["decoder.0.bias"].to("meta"))), ValueError, r"params must all be on one device; got \['cpu', 'meta'\]"),
}  # fmt: skip


def _with_at(x, flat_index, value):
    x = x.clone()
    x.view(-1)[flat_index] = value
    return x


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_rejected_before_any_step(name):
    (params_fn, data_fn, kwargs), exc, match = BAD_INPUTS[name]
    params, x = _tiny()
    calls = []
    kwargs = {"epochs": 1, "batch_size": 32} | QUIET | kwargs
    with pytest.raises(exc, match=match):
        vaefunc.train(
            params_fn(params), data_fn(x), **kwargs,
            should_stop=lambda: calls.append("step") or False,  # polled after every step
            on_epoch=lambda *a: calls.append("epoch"),
        )  # fmt: skip
    assert calls == [], f"{name}: training ran ({calls}) before the error"


def test_every_bad_input_case_is_valid_apart_from_its_flaw():
    """Control for the table above: the unmodified call trains fine, and the spies see it."""
    params, x = _tiny()
    calls = []
    vaefunc.train(
        params, x, epochs=1, batch_size=32, **QUIET,
        should_stop=lambda: calls.append("step") or False, on_epoch=lambda *a: calls.append("epoch"),
    )  # fmt: skip
    assert calls == ["step"] * 3 + ["epoch"]


# ------------------------------------------------------------------ non-finite loss


def _stop_after(k: int):
    """A should_stop that says stop after the k-th step."""
    count = [0]

    def should_stop():
        count[0] += 1
        return count[0] >= k

    return should_stop


def _all_finite(tree) -> bool:
    if isinstance(tree, torch.Tensor):
        return bool(torch.isfinite(tree).all())
    if isinstance(tree, dict):
        return all(_all_finite(v) for v in tree.values())
    if isinstance(tree, tuple):
        return all(_all_finite(v) for v in tree)
    return True


@pytest.mark.parametrize("binarize", [None, "dynamic"])  # "dynamic": the replay redraws the binarization
def test_a_diverging_run_raises_naming_epoch_and_step_and_keeps_the_last_finite_state(binarize):
    # lr = 1e10 blows the weights or Adam's moments up to inf within a few steps of epoch 1.
    params, x = _tiny(seed=3, n=256)
    kw = dict(epochs=3, batch_size=32, lr=1e10, seed=0, binarize=binarize, **QUIET)
    with pytest.raises(vaefunc.NonFiniteLossError) as info:
        vaefunc.train(params, x, **kw)
    e = info.value
    assert isinstance(e, FloatingPointError)
    assert e.epoch == 1 and e.step > 1, (e.epoch, e.step)
    assert f"at epoch {e.epoch}, step {e.step} of 8" in str(e)
    assert _all_finite(e.params) and _all_finite(e.opt_state) and e.history == []
    # .params / .opt_state are exactly the state after the step before the bad one ...
    before = vaefunc.train(params, x, **kw, should_stop=_stop_after(e.step - 1))
    for k in params:
        torch.testing.assert_close(e.params[k], before.params[k], rtol=0, atol=0)
    assert int(e.opt_state[0].count) == e.step - 1
    # ... and one more step from there is indeed the first non-finite one.
    with pytest.raises(vaefunc.NonFiniteLossError):
        vaefunc.train(params, x, **kw, should_stop=_stop_after(e.step))


def test_a_non_finite_first_step_keeps_the_initial_params():
    """A Gaussian with obs_std = 1e-30 overflows float32 at once: epoch 1, step 1."""
    params, x = _tiny()
    with pytest.raises(vaefunc.NonFiniteLossError, match=r"epoch 1, step 1 of 3 \(loss inf\)") as info:
        vaefunc.train(params, x, epochs=2, batch_size=32, likelihood="gaussian", obs_std=1e-30, **QUIET)
    for k in params:
        torch.testing.assert_close(info.value.params[k], params[k], rtol=0, atol=0)
    assert int(info.value.opt_state[0].count) == 0


def test_a_non_finite_loss_in_a_later_epoch_names_that_epoch():
    """Epoch 1 trains; the (resumed) run blows up in epoch 2 and says so, keeping epoch 1's history."""
    params, x = _tiny(seed=3, n=256)
    first = vaefunc.train(params, x, epochs=1, batch_size=32, seed=0, **QUIET)
    with pytest.raises(vaefunc.NonFiniteLossError, match=r"epoch 2, step \d+ of 8") as info:
        # Same run, epoch 2 onwards, with a lr that diverges: resume=state continues the streams.
        vaefunc.train(params, x, epochs=2, batch_size=32, seed=0, lr=1e10, resume=first.state, **QUIET)
    assert info.value.epoch == 2 and _all_finite(info.value.params)


# -------------------------------------------------------------------------- resume


@pytest.mark.parametrize("binarize", [None, "dynamic"])
@pytest.mark.parametrize("stop_at", [5, 3, 9])  # mid-epoch 2, end of epoch 1, mid-epoch 3 (3 steps/epoch)
def test_resume_after_should_stop_is_bit_identical(binarize, stop_at):
    params, x = _tiny()
    kw = dict(epochs=4, batch_size=32, seed=5, binarize=binarize, **QUIET)
    full = vaefunc.train(params, x, **kw)
    part = vaefunc.train(params, x, **kw, should_stop=_stop_after(stop_at))
    assert part.interrupted and not full.interrupted
    # A stop on an epoch's last step returns before that epoch's entry; the resumed run writes it.
    assert len(part.history) == (stop_at - 1) // 3
    rest = vaefunc.train(params, x, **kw, resume=part.state)
    assert not rest.interrupted
    for k in params:
        torch.testing.assert_close(rest.params[k], full.params[k], rtol=0, atol=0)
    oracles.assert_identical(rest.opt_state, full.opt_state)
    # The epoch that was cut in two reports the same means as the uninterrupted one.
    for h in rest.history:
        ref = full.history[h["epoch"] - 1]
        assert {k: h[k] for k in ("loss", "recon", "kl")} == {k: ref[k] for k in ("loss", "recon", "kl")}
    assert [h["epoch"] for h in part.history + rest.history] == [1, 2, 3, 4]


# ------------------------------------------------------- history, purity, determinism


def test_history_has_one_entry_per_epoch_with_the_documented_keys():
    params, x = _tiny()
    seen = []
    result = vaefunc.train(params, x, epochs=3, batch_size=32, **QUIET, on_epoch=lambda h, s: seen.append((h, s)))
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    for h in result.history:
        assert {"epoch", "loss", "recon", "kl", "seconds"} <= set(h)
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in h.values())
        assert h["loss"] == pytest.approx(h["kl"] - h["recon"], rel=1e-5)  # beta = 1
        assert h["seconds"] >= 0
    assert [h for h, _ in seen] == result.history
    assert [s.epoch for _, s in seen] == [1, 2, 3] and all(s.step == 0 for _, s in seen)


def test_train_is_pure():
    params, x = _tiny()
    saved_params, saved_x = {k: v.clone() for k, v in params.items()}, x.clone()
    x_np = x.numpy().copy()
    saved_np = x_np.copy()
    result = vaefunc.train(params, x, epochs=2, batch_size=32, binarize="dynamic", **QUIET)
    vaefunc.train(params, x_np, epochs=1, batch_size=32, **QUIET)
    for k in params:
        torch.testing.assert_close(params[k], saved_params[k], rtol=0, atol=0)
        assert result.params[k] is not params[k]
    torch.testing.assert_close(x, saved_x, rtol=0, atol=0)
    np.testing.assert_array_equal(x_np, saved_np)
    # Continuing from a result leaves that result untouched too.
    saved_result = oracles.clone_tree((result.params, result.opt_state, result.state))
    vaefunc.train(result.params, x, epochs=1, batch_size=32, lr=2e-3, opt_state=result.opt_state, **QUIET)
    vaefunc.train(result.params, x, epochs=3, batch_size=32, resume=result.state, **QUIET)
    oracles.assert_identical((result.params, result.opt_state, result.state), saved_result)


def test_same_seed_is_bit_identical_and_different_seeds_differ():
    params, x = _tiny()
    a = vaefunc.train(params, x, epochs=2, batch_size=32, seed=1, **QUIET)
    b = vaefunc.train(params, x, epochs=2, batch_size=32, seed=1, **QUIET)
    c = vaefunc.train(params, x, epochs=2, batch_size=32, seed=2, **QUIET)
    for k in params:
        torch.testing.assert_close(a.params[k], b.params[k], rtol=0, atol=0)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert all(not torch.equal(a.params[k], c.params[k]) for k in params)
    # numpy data and float64 data are accepted and train the same way.
    d = vaefunc.train(params, x.numpy(), epochs=2, batch_size=32, seed=1, **QUIET)
    for k in params:
        torch.testing.assert_close(d.params[k], a.params[k], rtol=0, atol=0)


def test_a_continued_run_takes_the_new_lr():
    params, x = _tiny()
    first = vaefunc.train(params, x, epochs=1, batch_size=32, lr=1e-3, **QUIET)
    for kw in (dict(opt_state=first.opt_state), dict(resume=first.state)):
        again = vaefunc.train(first.params, x, epochs=2, batch_size=32, lr=5e-3, **kw, **QUIET)
        assert float(again.opt_state[1].lr) == pytest.approx(5e-3)
    assert float(first.opt_state[1].lr) == pytest.approx(1e-3)  # the old state is untouched


def test_static_binarization_trains_on_thresholded_data():
    params, x = _tiny()
    a = vaefunc.train(params, x, epochs=2, batch_size=32, binarize="static", **QUIET)
    b = vaefunc.train(params, (x > 0.5).float(), epochs=2, batch_size=32, **QUIET)
    oracles.assert_identical(a.params, b.params)
    c = vaefunc.train(params, x, epochs=2, batch_size=32, binarize="dynamic", **QUIET)
    assert not torch.equal(c.params["decoder.2.bias"], a.params["decoder.2.bias"])


def test_zero_epochs_returns_the_params_unchanged():
    params, x = _tiny()
    result = vaefunc.train(params, x, epochs=0, batch_size=32, **QUIET)
    assert result.history == [] and not result.interrupted
    for k in params:
        torch.testing.assert_close(result.params[k], params[k], rtol=0, atol=0)


def test_auto_compile_rule_is_deterministic_and_skips_short_cpu_runs():
    params = vaefunc.VAE((784,), latent_dim=20, hidden=(400,)).init()
    cpu = torch.device("cpu")
    assert not compiles_for_params("auto", cpu, params, 128, 10 * (5000 // 128))  # the default 10-epoch run
    assert compiles_for_params("auto", cpu, params, 128, 10**7)  # a very long run repays the compile
    assert compiles_for_params("auto", torch.device("cuda"), params, 128, 1)
    assert compiles_for_params(True, cpu, params, 128, 1) and not compiles_for_params(False, cpu, params, 128, 10**9)
    assert AUTO_COMPILE_MIN_SECONDS > 0


def test_auto_compile_comes_sooner_when_the_compiled_step_runs_bf16_matmuls():
    """A bf16 compiled step repays the cold compile sooner: between the two thresholds, compile="auto"
    compiles only if the compiled step would run bf16 matmuls (explicit here; "auto" on an AMX CPU)."""
    from vaefunc.training import AUTO_COMPILE_MIN_SECONDS_BF16, compiles

    params = vaefunc.VAE((784,), latent_dim=20, hidden=(400,)).init()
    model, cpu = vaefunc.VAE((784,), latent_dim=20, hidden=(400,)), torch.device("cpu")
    assert AUTO_COMPILE_MIN_SECONDS_BF16 < AUTO_COMPILE_MIN_SECONDS
    step_seconds = 6 * 128 * model.macs_per_example() / 1e11 + 2e-4  # the rule's own estimate of one step
    between = int((AUTO_COMPILE_MIN_SECONDS_BF16 + AUTO_COMPILE_MIN_SECONDS) / 2 / step_seconds)
    assert compiles_for_params("auto", cpu, params, 128, between, autocast="bf16")
    assert not compiles_for_params("auto", cpu, params, 128, between, autocast=None)
    bf16, f32 = (vaefunc.TrainConfig(batch_size=128, autocast=a) for a in ("bf16", None))
    assert compiles(model, bf16, cpu, None, between) and not compiles(model, f32, cpu, None, between)
    auto = vaefunc.TrainConfig(batch_size=128)  # autocast="auto": float64 data never takes bf16, so not yet
    assert not compiles(model, auto, cpu, None, between, torch.float64)


def test_progress_bar_goes_to_stderr_only_when_asked(capsys):
    params, x = _tiny()
    vaefunc.train(params, x, epochs=1, batch_size=32, compile=False, progress=False)
    assert capsys.readouterr() == ("", "")
    vaefunc.train(params, x, epochs=1, batch_size=32, compile=False, progress=True)  # stderr is not a tty here
    assert capsys.readouterr().err == ""
    vaefunc.train(params, x, epochs=1, batch_size=32, compile=False, progress="always")
    captured = capsys.readouterr()
    assert captured.out == "" and "96/96" in captured.err and "loss=" in captured.err  # 3 steps of 32 examples


# Inductor's own import of torch.jit warns on torch 2.13; that is torch's, not ours.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.compile
@pytest.mark.slow
def test_compiled_training_agrees_with_eager():
    torch._dynamo.reset()
    params, x = _tiny(n=128)  # d=16, hidden=(8,), z=2: 4 steps per epoch
    # float32 on both sides (autocast="auto" would pick bf16 for the compiled run on an AMX CPU)
    kw = dict(epochs=2, batch_size=32, lr=1e-3, seed=4, binarize="dynamic", progress=False, autocast=None)
    eager = vaefunc.train(params, x, compile=False, **kw)
    torch._dynamo.utils.counters.clear()
    compiled = vaefunc.train(params, x, compile=True, **kw)
    # One graph for all 8 steps: nothing in the loop (step count, Adam state, batches) recompiles.
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1, dict(torch._dynamo.utils.counters["stats"])
    for h_c, h_e in zip(compiled.history, eager.history):
        for k in ("loss", "recon", "kl"):
            assert h_c[k] == pytest.approx(h_e[k], rel=1e-4, abs=1e-4), (h_c, h_e)
    for k in params:  # Adam amplifies rounding differences (STYLE.md fact 2)
        torch.testing.assert_close(compiled.params[k], eager.params[k], rtol=0, atol=1e-4)
    assert torch.equal(compiled.opt_state[0].count, eager.opt_state[0].count)


# ------------------------------------------------------------------ the hidden activation


def test_a_tanh_run_is_the_pure_tanh_step_and_saves_its_activation(tmp_path):
    """One epoch of train(activation="tanh") equals the tanh loss's step run by hand (eager on a CPU,
    train's step is the fused in-place Adam of vaefunc.donate); the config records the activation
    and a checkpoint of it round-trips."""
    from tests.test_donate import fused_adam_step
    from vaefunc.donate import owned
    from vaefunc.optim import adam

    params, x = _tiny(dtype=F64)
    result = vaefunc.train(params, x, epochs=1, batch_size=32, lr=1e-2, seed=3, activation="tanh", **QUIET)
    advance = fused_adam_step(vaefunc.VAE((16,), latent_dim=2, hidden=(8,), activation="tanh").loss())
    streams = make_streams(3)
    perm = torch.randperm(96, generator=streams.data).view(3, 32)
    eps = torch.randn(3, 32, 2, generator=streams.noise, dtype=F64)
    p, s = owned((params, adam(1e-2).init(params)))
    one, zero = torch.tensor(1.0, dtype=F64), torch.tensor(0.0, dtype=F64)
    for i in range(3):
        advance(p, s, x[perm[i]], eps[i], one, zero)
    for k in p:
        torch.testing.assert_close(result.params[k], p[k], rtol=0, atol=0, msg=k)
    relu = vaefunc.train(params, x, epochs=1, batch_size=32, lr=1e-2, seed=3, **QUIET)  # negative control
    assert not torch.allclose(relu.params["encoder.0.weight"], p["encoder.0.weight"])
    config = vaefunc.TrainConfig(activation="tanh")
    path = vaefunc.save(tmp_path / "tanh.safetensors", result.params, config=config, state=result.state)
    ckpt = vaefunc.load(path)
    assert ckpt.config["activation"] == "tanh" and vaefunc.TrainConfig(**ckpt.config) == config
    assert vaefunc.TrainConfig().activation == "relu"  # the default: every earlier result is unchanged
    more = vaefunc.train(ckpt.params, x, epochs=2, batch_size=32, lr=1e-2, seed=3, activation="tanh",
                         resume=ckpt.state, **QUIET)  # fmt: skip
    again = vaefunc.train(params, x, epochs=2, batch_size=32, lr=1e-2, seed=3, activation="tanh", **QUIET)
    for k in p:
        torch.testing.assert_close(more.params[k], again.params[k], rtol=0, atol=0, msg=k)


def test_relu_and_tanh_never_share_a_cached_step():
    from vaefunc.runners import Plan, _advance
    from vaefunc.training import default_optimizer

    opt = default_optimizer(0.9, 0.999, 1e-8, None)
    plan = lambda activation: Plan(vaefunc.VAE((16,), activation=activation), "elbo", "beta", 0.0, opt, False, "cpu")  # noqa: E731
    relu, tanh = _advance(plan("relu")), _advance(plan("tanh"))
    assert relu is not tanh
    assert _advance(plan("tanh")) is tanh  # cached


def test_a_finite_divergence_warns_once_naming_the_step_and_the_likely_cause():
    """A loss that grows by orders of magnitude but stays finite is not silent (lr 3 for Adam)."""
    from vaefunc.data import load

    x = load("digits", split="train").images[:512]
    model = vaefunc.VAE((1, 8, 8), latent_dim=4, hidden=(32,))
    with pytest.warns(vaefunc.DivergenceWarning, match=r"by epoch 1, step 8: .*learning rate 3 is large") as record:
        vaefunc.train(model.init(), x, model=model, epochs=3, batch_size=64, lr=3.0, **QUIET)
    assert len(record) == 1
    with warnings.catch_warnings():  # negative control: the default lr trains without a word
        warnings.simplefilter("error")
        vaefunc.train(model.init(), x, model=model, epochs=3, batch_size=64, **QUIET)
