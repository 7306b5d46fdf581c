"""optim.py: the pure optimizer equals torch.optim.Adam and never mutates its inputs."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import vaefunc
from tests import oracles
from tests import strategies as S

F64 = torch.float64


def _params(seed: int, dtype=F64) -> dict[str, torch.Tensor]:
    return {
        "encoder.0.weight": S.randn(seed, 4, 3, dtype=dtype),
        "encoder.0.bias": S.randn(seed + 1, 4, dtype=dtype),
        "decoder.0.weight": S.randn(seed + 2, 3, 2, dtype=dtype),
        "scalar": S.randn(seed + 3, dtype=dtype),  # a 0-d leaf
    }


def _grad_fn(params: dict[str, torch.Tensor], t: int) -> dict[str, torch.Tensor]:
    """The gradient of a non-quadratic loss at params, plus step-dependent noise (so Adam keeps moving)."""
    return {
        k: torch.sin(3 * v) + 0.1 * v**3 + S.randn(1000 + t, *v.shape, dtype=v.dtype, scale=0.5)
        for k, v in params.items()
    }


def _run_pure(opt, params, steps):
    state = opt.init(params)
    out = []
    for t in range(steps):
        updates, state = opt.update(_grad_fn(params, t), state, params)
        params = vaefunc.apply_updates(params, updates)
        out.append(params)
    return out, state


@pytest.mark.parametrize(
    "dtype, tol", [(F64, dict(rtol=1e-12, atol=1e-12)), (torch.float32, dict(rtol=1e-5, atol=1e-5))]
)
@pytest.mark.parametrize("hp", [dict(lr=1e-2), dict(lr=0.3, b1=0.5, b2=0.9, eps=1e-3)])
def test_adam_equals_torch_optim_adam_over_100_steps(dtype, tol, hp):
    params = _params(0, dtype)
    lr = hp["lr"]
    kw = {k: v for k, v in hp.items() if k != "lr"}
    ours, state = _run_pure(vaefunc.adam(lr, **kw), params, 100)
    ref = oracles.adam_reference(params, _grad_fn, 100, lr=lr, **kw)
    for t in (0, 1, 9, 99):
        for k in params:
            torch.testing.assert_close(ours[t][k], ref[t][k], **tol, msg=f"step {t + 1}, {k}")
    assert int(state[0].count) == 100


def test_adam_does_not_mutate_its_inputs():
    params = _params(0)
    opt = vaefunc.adam(0.1)
    state = opt.init(params)
    _, state = opt.update(_grad_fn(params, 0), state, params)  # non-zero moments
    grads = _grad_fn(params, 1)
    before = [{k: v.clone() for k, v in tree.items()} for tree in (params, grads, state[0].mu, state[0].nu)]
    count, lr = state[0].count.clone(), state[1].lr.clone()
    updates, new_state = opt.update(grads, state, params)
    new_params = vaefunc.apply_updates(params, updates)
    for tree, saved in zip((params, grads, state[0].mu, state[0].nu), before):
        for k in saved:
            torch.testing.assert_close(tree[k], saved[k], rtol=0, atol=0)
    assert torch.equal(state[0].count, count) and torch.equal(state[1].lr, lr)
    assert int(new_state[0].count) == 2 and not torch.equal(new_params["scalar"], params["scalar"])


def test_lr_lives_in_the_state_and_replacing_it_changes_the_step():
    params = _params(0)
    opt = vaefunc.adam(1e-2)
    state = opt.init(params)
    adam_state, lr_state = state
    assert isinstance(adam_state, vaefunc.AdamState)
    assert adam_state.count.shape == () and adam_state.count.dtype == torch.int64
    assert lr_state.lr.shape == () and lr_state.lr.dtype == F64 and float(lr_state.lr) == 1e-2
    grads = _grad_fn(params, 0)
    updates, _ = opt.update(grads, state, params)
    doubled = (adam_state, lr_state._replace(lr=torch.tensor(2e-2, dtype=F64)))
    updates2, new_state = opt.update(grads, doubled, params)
    for k in params:
        torch.testing.assert_close(updates2[k], 2 * updates[k], rtol=1e-15, atol=0)
    assert float(new_state[1].lr) == 2e-2  # the replaced lr is carried on


def test_sgd_and_a_schedule():
    params = _params(0)
    grads = _grad_fn(params, 0)
    updates, state = vaefunc.sgd(0.5).update(grads, vaefunc.sgd(0.5).init(params), params)
    for k in params:
        torch.testing.assert_close(updates[k], -0.5 * grads[k], rtol=0, atol=0)
    opt = vaefunc.sgd(lambda count: 1.0 / (count.to(F64) + 1.0))  # count: the 0-d int64 step count
    state = opt.init(params)
    for t in range(3):
        updates, state = opt.update(grads, state, params)
        torch.testing.assert_close(updates["scalar"], -grads["scalar"] / (t + 1), rtol=1e-15, atol=0)
        torch.testing.assert_close(state.lr, torch.tensor(1.0 / (t + 1), dtype=F64))


@given(seed=S.seeds, max_norm=st.floats(0.01, 100.0))
def test_clip_by_global_norm(seed, max_norm):
    grads = _params(seed % 1000)
    norm = math.sqrt(sum(float(v.square().sum()) for v in grads.values()))
    clip = vaefunc.clip_by_global_norm(max_norm)
    clipped, _ = clip.update(grads, clip.init(grads))
    new_norm = math.sqrt(sum(float(v.square().sum()) for v in clipped.values()))
    if norm <= max_norm:
        for k in grads:
            torch.testing.assert_close(clipped[k], grads[k], rtol=1e-12, atol=0)
    else:
        assert new_norm == pytest.approx(max_norm, rel=1e-9)
        for k in grads:  # one common factor: the direction is kept
            torch.testing.assert_close(clipped[k], grads[k] * (max_norm / norm), rtol=1e-9, atol=1e-12)


def test_chain_applies_transforms_in_order():
    params = {"w": torch.tensor([3.0, 4.0], dtype=F64)}  # global norm 5
    grads = {"w": torch.tensor([3.0, 4.0], dtype=F64)}
    opt = vaefunc.chain(vaefunc.clip_by_global_norm(1.0), vaefunc.sgd(0.1))
    state = opt.init(params)
    assert isinstance(state, tuple) and len(state) == 2
    updates, state = opt.update(grads, state, params)
    torch.testing.assert_close(updates["w"], torch.tensor([-0.06, -0.08], dtype=F64))
    new = vaefunc.apply_updates(params, updates)
    torch.testing.assert_close(new["w"], torch.tensor([2.94, 3.92], dtype=F64))
    assert torch.equal(params["w"], torch.tensor([3.0, 4.0], dtype=F64))  # apply_updates is pure
    assert int(state[1].count) == 1


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: vaefunc.adam(0.0), r"learning_rate must be a positive finite number; got 0.0"),
        (lambda: vaefunc.adam(float("nan")), r"got nan"),
        (lambda: vaefunc.adam(-1), r"got -1"),
        (lambda: vaefunc.adam(1e-3, b1=1.0), r"b1 must be in \[0, 1\); got 1.0"),
        (lambda: vaefunc.adam(1e-3, b2=-0.1), r"b2 must be in \[0, 1\); got -0.1"),
        (lambda: vaefunc.adam(1e-3, eps=-1.0), r"eps must be >= 0; got -1.0"),
        (lambda: vaefunc.sgd(float("inf")), r"got inf"),
    ],
)
def test_bad_hyperparameters_are_rejected(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_adam_state_tensors_are_not_aliased():
    """Aliased mu/nu would make a compiled step guard on aliasing and recompile at step 2."""
    params = _params(0)
    state = vaefunc.adam(1e-3).init(params)[0]
    for k in params:
        assert state.mu[k] is not state.nu[k] and state.mu[k] is not params[k]
        assert state.mu[k].untyped_storage().data_ptr() != state.nu[k].untyped_storage().data_ptr()
