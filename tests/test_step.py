"""step.py: the step is pure, equals its definition, and compiles to one graph
that agrees with eager and does not recompile when a hyperparameter tensor changes."""

from __future__ import annotations

import pytest
import torch

import vaefunc
from tests import oracles
from tests import strategies as S

F64 = torch.float64
MODEL = vaefunc.VAE((16,), latent_dim=2, hidden=(8,))  # _setup's default sizes


def _setup(dtype=F64, d=16, z=2, hidden=(8,), b=8, seed=0):
    params = vaefunc.VAE((d,), latent_dim=z, hidden=hidden).init(seed, dtype=dtype)
    x, eps = S.rand(seed + 1, b, d, dtype=dtype), S.randn(seed + 2, b, z, dtype=dtype)
    beta = torch.tensor(0.7, dtype=dtype)
    return params, x, eps, beta


def test_step_is_pure():
    params, x, eps, beta = _setup()
    opt = vaefunc.adam(1e-2)
    step = vaefunc.make_step(oracles.beta_loss(MODEL), opt)
    opt_state = opt.init(params)
    params, opt_state, _ = step(params, opt_state, x, eps, beta)  # non-trivial state
    saved = oracles.clone_tree((params, opt_state, x, eps, beta))
    new_params, new_state, _ = step(params, opt_state, x, eps, beta)
    oracles.assert_identical((params, opt_state, x, eps, beta), saved)
    assert all(new_params[k] is not params[k] for k in params)
    assert not torch.equal(new_params["decoder.0.weight"], params["decoder.0.weight"])
    assert int(new_state[0].count) == 2


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_step_is_grad_then_update(likelihood):
    """step == apply_updates(params, opt.update(grad(loss)(params))) and returns the loss's metrics."""
    params, x, eps, beta = _setup()
    opt = vaefunc.adam(1e-2)
    loss_fn = oracles.beta_loss(vaefunc.VAE((16,), latent_dim=2, hidden=(8,), likelihood=likelihood, obs_std=0.5))
    opt_state = opt.init(params)
    new_params, new_state, metrics = vaefunc.make_step(loss_fn, opt)(params, opt_state, x, eps, beta)

    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    loss, aux = loss_fn(leaves, x, eps, beta)
    grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))
    updates, ref_state = opt.update(grads, opt_state, params)
    expected = vaefunc.apply_updates(params, updates)
    for k in params:
        torch.testing.assert_close(new_params[k], expected[k], rtol=1e-12, atol=1e-14)
    assert set(metrics) == {"loss", "recon", "kl", "elbo"} and all(v.shape == () for v in metrics.values())
    torch.testing.assert_close(metrics["loss"], loss.detach())
    for k in aux:
        torch.testing.assert_close(metrics[k], aux[k].detach())
    torch.testing.assert_close(new_state[0].mu["encoder.0.weight"], ref_state[0].mu["encoder.0.weight"])


def test_hparams_change_the_step_without_new_code():
    """beta enters as a 0-d tensor: beta = 0 ignores the KL, beta = 1 does not."""
    params, x, eps, _ = _setup()
    opt = vaefunc.sgd(1.0)
    step = vaefunc.make_step(oracles.beta_loss(MODEL), opt)
    zero = step(params, opt.init(params), x, eps, torch.tensor(0.0, dtype=F64))
    one = step(params, opt.init(params), x, eps, torch.tensor(1.0, dtype=F64))
    torch.testing.assert_close(zero[2]["loss"], -zero[2]["recon"])
    torch.testing.assert_close(one[2]["loss"], one[2]["kl"] - one[2]["recon"])
    assert not torch.equal(zero[0]["encoder.0.weight"], one[0]["encoder.0.weight"])


# Inductor's own import of torch.jit warns on torch 2.13; that is torch's, not ours.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.compile
@pytest.mark.slow
def test_compiled_step_has_no_graph_breaks_agrees_with_eager_and_does_not_recompile():
    torch._dynamo.reset()
    # d=16, hidden=(8,), z=2, b=32: the graph test_train's compiled run makes, so a
    # cold Inductor compiles it once and the second test hits the FX graph cache.
    params, x, eps, beta = _setup(dtype=torch.float32, b=32)
    opt = vaefunc.adam(1e-3)
    step = vaefunc.make_step(oracles.beta_loss(MODEL), opt)
    opt_state = opt.init(params)

    explain = torch._dynamo.explain(step)(params, opt_state, x, eps, beta)
    assert explain.graph_break_count == 0, explain.break_reasons
    assert explain.graph_count == 1

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    c_params, c_state, c_metrics = compiled(params, opt_state, x, eps, beta)
    e_params, e_state, e_metrics = step(params, opt_state, x, eps, beta)
    for k in e_metrics:
        torch.testing.assert_close(c_metrics[k], e_metrics[k], rtol=1e-5, atol=1e-5)
    # After one step Adam's first moment is (1 - b1) * grad: the gradients, compared tightly.
    for k in params:
        torch.testing.assert_close(c_state[0].mu[k] / 0.1, e_state[0].mu[k] / 0.1, rtol=1e-4, atol=1e-6)
        # Adam's normalisation amplifies rounding (STYLE.md fact 2): post-Adam params within 1e-4.
        torch.testing.assert_close(c_params[k], e_params[k], rtol=0, atol=1e-4)
    assert int(c_state[0].count) == 1

    # Later steps with new values (count, params, data, and a changed beta tensor) reuse the graph.
    with torch.compiler.set_stance("fail_on_recompile"):
        p, s = c_params, c_state
        for i, b in enumerate((0.0, 0.3, 2.0)):
            p, s, m = compiled(p, s, x.flip(0), eps * (i + 1), torch.tensor(b))
    e_p, e_s = e_params, e_state
    for i, b in enumerate((0.0, 0.3, 2.0)):
        e_p, e_s, e_m = step(e_p, e_s, x.flip(0), eps * (i + 1), torch.tensor(b))
    torch.testing.assert_close(m["loss"], e_m["loss"], rtol=1e-4, atol=1e-4)
    for k in params:
        torch.testing.assert_close(p[k], e_p[k], rtol=0, atol=1e-4)
