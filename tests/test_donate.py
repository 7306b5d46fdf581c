"""donate.py: a donated step writes exactly the pure step's results into its inputs; the fused
Adam step equals the pure adam to rounding; the caller's tensors are never touched by train."""

from __future__ import annotations

import pytest
import torch

import vaefunc
from vaefunc.donate import donated, eager_grad_and_value, fused_adam_update_, owned
from tests import oracles
from tests import strategies as S


def fused_adam_step(loss_fn, *, b1=0.9, b2=0.999, eps=1e-8):
    """An eager ``advance`` for vaefunc.adam's state: the gradient by eager_grad_and_value, then one fused
    in-place Adam pass (what train's eager CPU step runs), overwriting params and opt_state."""
    grad_fn = eager_grad_and_value(loss_fn)

    def advance(params, opt_state, *args, **inputs):
        grads, (loss, metrics) = grad_fn(params, *args, **inputs)
        fused_adam_update_(params, grads, opt_state, b1=b1, b2=b2, eps=eps)
        return {"loss": loss, **metrics}

    return advance

F64 = torch.float64
MODEL = vaefunc.VAE((16,), latent_dim=2, hidden=(8,))  # _setup's sizes


def _setup(dtype=F64, d=16, z=2, hidden=(8,), b=8, seed=0):
    params = vaefunc.VAE((d,), latent_dim=z, hidden=hidden).init(seed, dtype=dtype)
    x, eps = S.rand(seed + 1, b, d, dtype=dtype), S.randn(seed + 2, b, z, dtype=dtype)
    return params, x, eps, torch.tensor(0.7, dtype=dtype)


def _pure_run(params, opt, batches):
    step = vaefunc.make_step(oracles.beta_loss(MODEL), opt)
    p, s = params, opt.init(params)
    for x, eps, beta in batches:
        p, s, metrics = step(p, s, x, eps, beta)
    return p, s, metrics


def _batches(params, x, eps, beta, n=5):
    return [(x.roll(i, 0), eps.roll(i, 0), beta) for i in range(n)]


def test_owned_copies_every_tensor_and_keeps_the_structure():
    params, *_ = _setup()
    opt_state = vaefunc.adam(1e-2).init(params)
    p, s = owned((params, opt_state))
    assert type(s) is type(opt_state) and type(s[0]) is type(opt_state[0]) and list(p) == list(params)
    oracles.assert_identical((p, s), (params, opt_state))
    assert all(p[k].data_ptr() != params[k].data_ptr() for k in params)


def test_donated_step_writes_the_pure_steps_results_bit_for_bit_into_its_inputs():
    params, x, eps, beta = _setup()
    opt = vaefunc.adam(1e-2)
    batches = _batches(params, x, eps, beta)
    want_p, want_s, want_m = _pure_run(params, opt, batches)
    advance = donated(vaefunc.make_step(oracles.beta_loss(MODEL), opt))
    p, s = owned((params, opt.init(params)))
    ptrs = [t.data_ptr() for t in (*p.values(), *s[0].mu.values())]
    for x_i, eps_i, beta_i in batches:
        metrics = advance(p, s, x_i, eps_i, beta_i)
    oracles.assert_identical((p, s), (want_p, want_s))
    assert torch.equal(metrics["loss"], want_m["loss"])
    assert ptrs == [t.data_ptr() for t in (*p.values(), *s[0].mu.values())]  # the same buffers


def test_donated_refuses_a_step_that_changes_the_state_structure():
    params, x, eps, beta = _setup()

    def bad(p, s, *args):
        return p, (), {}

    with pytest.raises(ValueError, match="structure"):
        donated(bad)(owned(params), ((),), x, eps, beta)


@pytest.mark.parametrize("dtype, tol", [(F64, 1e-13), (torch.float32, 1e-5)])
def test_fused_adam_step_equals_the_pure_step_to_rounding(dtype, tol):
    """Same gradient, same Adam; the fused kernel orders its arithmetic differently, so
    the params agree to rounding, not bit for bit (the negative control: another lr does not)."""
    params, x, eps, beta = _setup(dtype=dtype)
    opt = vaefunc.adam(1e-2)
    batches = _batches(params, x, eps, beta, n=20)
    want_p, want_s, _ = _pure_run(params, opt, batches)
    advance = fused_adam_step(oracles.beta_loss(MODEL))
    p, s = owned((params, opt.init(params)))
    for x_i, eps_i, beta_i in batches:
        advance(p, s, x_i, eps_i, beta_i)
    for k in params:
        torch.testing.assert_close(p[k], want_p[k], rtol=tol, atol=tol, msg=k)
        torch.testing.assert_close(s[0].nu[k], want_s[0].nu[k], rtol=tol, atol=tol, msg=k)
    assert int(s[0].count) == int(s[1].count) == 20
    other, _, _ = _pure_run(params, vaefunc.adam(1.1e-2), batches)
    assert not torch.allclose(p["encoder.0.weight"], other["encoder.0.weight"], rtol=tol, atol=tol)


def test_fused_update_of_a_stack_with_per_member_lr_equals_each_member_alone():
    """An (m,) lr updates member i's slices with lr[i], exactly as a lone model's update."""
    m = 3
    stack = vaefunc.init_many(m, (6,), latent_dim=2, hidden=(5,), seed=0, dtype=F64)
    grads = {k: S.randn(i + 10, *v.shape, dtype=F64) for i, (k, v) in enumerate(stack.items())}
    lrs = torch.tensor([1e-3, 1e-2, 3e-2], dtype=F64)
    state = owned(vaefunc.adam(lrs).init(stack))
    p = owned(stack)
    fused_adam_update_(p, grads, state)
    for i, lone in enumerate(vaefunc.unstack(stack)):
        q, s = owned((lone, vaefunc.adam(float(lrs[i])).init(lone)))
        fused_adam_update_(q, {k: g[i] for k, g in grads.items()}, s)
        for k in q:
            assert torch.equal(p[k][i], q[k]), (i, k)


def test_fused_update_needs_adams_state():
    params, *_ = _setup()
    with pytest.raises(TypeError, match="vaefunc.adam"):
        fused_adam_update_(owned(params), params, vaefunc.sgd(0.1).init(params))


def test_train_never_writes_the_callers_params_or_opt_state():
    """train updates its own copies in place: what it was given, and what it handed out, stay put."""
    params, *_ = _setup()
    data = S.rand(7, 64, 16, dtype=F64)
    opt_state = vaefunc.adam(1e-2).init(params)
    saved = oracles.clone_tree((params, opt_state, data))
    first = vaefunc.train(params, data, epochs=1, batch_size=16, opt_state=opt_state, compile=False, progress=False)
    handed_out = oracles.clone_tree((first.params, first.opt_state, first.state))
    vaefunc.train(first.params, data, epochs=1, batch_size=16, resume=first.state, compile=False, progress=False)
    oracles.assert_identical((params, opt_state, data), saved)
    oracles.assert_identical((first.params, first.opt_state, first.state), handed_out)


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_eager_grad_and_value_equals_torch_func_bit_for_bit(objective):
    """The eager gradient (torch.autograd.grad) is torch.func.grad_and_value's, to the bit;
    a param that does not reach the loss gets a zero gradient, as with torch.func."""
    from vaefunc.donate import eager_grad_and_value
    params, x, eps, beta = _setup()
    params = {**params, "unused": torch.ones(3, dtype=F64)}
    noise = eps if objective == "elbo" else torch.stack([eps, eps.flip(0)])
    loss = MODEL.loss(objective)
    args = (params, x, noise, beta, torch.tensor(0.0, dtype=F64))
    want_g, (want_l, want_m) = torch.func.grad_and_value(loss, has_aux=True)(*args)
    got_g, (got_l, got_m) = eager_grad_and_value(loss)(*args)
    oracles.assert_identical((got_g, got_l, got_m), (want_g, want_l, want_m))
    assert torch.equal(got_g["unused"], torch.zeros(3, dtype=F64)) and not got_l.requires_grad


def test_states_handed_to_on_epoch_are_snapshots():
    """on_epoch's states stay as they were when handed out, though train goes on updating its own."""
    params, *_ = _setup()
    data = S.rand(8, 64, 16, dtype=F64)
    kept = []
    vaefunc.train(params, data, epochs=3, batch_size=16, compile=False, progress=False,
                  on_epoch=lambda entry, state: kept.append((state, oracles.clone_tree(state))))  # fmt: skip
    for state, copy in kept:
        oracles.assert_identical(state, copy)
    assert not torch.equal(kept[0][0].params["encoder.0.weight"], kept[-1][0].params["encoder.0.weight"])
