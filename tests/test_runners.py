"""vaefunc.runners and vaefunc.loop: one small runner interface, one factory that picks how a step
runs, and a loop that works with any runner; optimizers run in place through their own interface."""

from __future__ import annotations

import pytest
import torch

import vaefunc
from vaefunc import loop, runners
from vaefunc.optim import in_place
from vaefunc.training import setup

F64 = torch.float64


def _run(**kw):
    model = vaefunc.VAE((16,), latent_dim=2, hidden=(8,))
    x = torch.rand(96, 16, generator=torch.Generator().manual_seed(0), dtype=F64)
    config = vaefunc.TrainConfig(epochs=2, batch_size=32, compile=False, progress=False, **kw)
    return model, x, config


class CountingRunner:
    """A runner of one's own: the loop only ever calls advance, state and load."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def advance(self, batch):
        self.calls.append("advance")
        return self.inner.advance(batch)

    def state(self):
        self.calls.append("state")
        return self.inner.state()

    def load(self, params, opt_state):
        self.calls.append("load")
        self.inner.load(params, opt_state)


def test_the_loop_runs_any_runner_and_equals_train():
    model, x, config = _run()
    params = model.init(seed=0, dtype=F64)
    run = setup(params, x, model=model, config=config)
    counting = CountingRunner(run.runner)
    outcome = loop.fit(counting, run.feed, run.start, epochs=config.epochs, hooks=run.hooks)
    want = vaefunc.train(params, x, model=model, config=config)
    assert all(torch.equal(outcome.params[k], want.params[k]) for k in params)
    assert counting.calls.count("advance") == 2 * 3 and "load" not in counting.calls


@pytest.mark.parametrize("kind", ["eager", "graph buffers"])
def test_every_runner_replays_from_a_snapshot(kind, monkeypatch):
    """load(snapshot) then the same batches give the same state again, for each runner kind."""
    if kind == "graph buffers":  # the CUDA-graph runner's buffer logic, without capture, on a CPU
        monkeypatch.setattr(runners, "use_cuda_graph", lambda *a, **k: True)
    model, x, config = _run()
    run = setup(model.init(seed=0, dtype=F64), x, model=model, config=config)
    assert isinstance(run.runner, runners.Graphed if kind == "graph buffers" else runners.InPlace)
    draws = run.feed.draw(0)
    start = run.runner.state()
    first = [run.runner.advance(run.feed.batch(draws, i))["loss"].clone() for i in range(2)]
    after = run.runner.state()
    run.runner.load(*start)
    again = [run.runner.advance(run.feed.batch(draws, i))["loss"].clone() for i in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert all(torch.equal(a, b) for a, b in zip(torch.utils._pytree.tree_leaves(after),
                                                  torch.utils._pytree.tree_leaves(run.runner.state())))  # fmt: skip


def test_the_factory_picks_the_runner_from_the_plan():
    model, x, config = _run()
    assert isinstance(setup(model.init(), x.float(), model=model, config=config).runner, runners.InPlace)
    assert not runners.use_cuda_graph(torch.device("cpu"), True, binarize=None, labelled=False, members=None)
    assert runners.use_cuda_graph(torch.device("cuda"), True, binarize=None, labelled=False, members=None)
    assert not runners.use_cuda_graph(torch.device("cuda"), True, binarize="dynamic", labelled=False, members=None)


@pytest.mark.parametrize("make", [lambda: vaefunc.sgd(0.1), lambda: vaefunc.chain(vaefunc.clip_by_global_norm(0.5),
                                                                                  vaefunc.adam(1e-2))])  # fmt: skip
def test_an_optimizer_without_a_fused_step_runs_in_place_as_its_pure_update(make):
    opt = make()
    params = vaefunc.VAE((6,), latent_dim=2, hidden=(4,)).init(seed=0, dtype=F64)
    grads = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(i), dtype=F64)
             for i, (k, v) in enumerate(params.items())}  # fmt: skip
    state = opt.init(params)
    updates, want_state = opt.update(grads, state, params)
    want = vaefunc.apply_updates(params, updates)
    p, s = {k: v.clone() for k, v in params.items()}, torch.utils._pytree.tree_map(torch.clone, state)
    assert opt.step_in_place is None
    in_place(opt)(p, grads, s)
    assert all(torch.equal(p[k], want[k]) for k in params)
    assert all(torch.equal(a, b) for a, b in zip(torch.utils._pytree.tree_leaves(s),
                                                  torch.utils._pytree.tree_leaves(want_state)))  # fmt: skip


def test_the_fused_adam_is_an_optimizer_that_equals_adam_to_rounding():
    params = vaefunc.VAE((6,), latent_dim=2, hidden=(4,)).init(seed=0, dtype=F64)
    pure, fused = vaefunc.adam(1e-2), vaefunc.fused_adam(1e-2)
    assert fused.step_in_place is not None and pure.step_in_place is None
    p, s = {k: v.clone() for k, v in params.items()}, fused.init(params)
    q, t = params, pure.init(params)
    for i in range(10):
        grads = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(10 * i + j), dtype=F64)
                 for j, (k, v) in enumerate(params.items())}  # fmt: skip
        fused.step_in_place(p, grads, s)
        updates, t = pure.update(grads, t, q)
        q = vaefunc.apply_updates(q, updates)
    for k in params:
        torch.testing.assert_close(p[k], q[k], rtol=1e-13, atol=1e-13)
    # The pure halves are the same functions: a compiled step fuses adam's update itself.
    updates, _ = fused.update(grads, fused.init(params), params)
    want, _ = pure.update(grads, pure.init(params), params)
    assert all(torch.equal(updates[k], want[k]) for k in params)


def test_auto_compile_counts_the_samples_a_semi_supervised_step_decodes():
    """M2 decodes every class and classifies: compile="auto" weighs its step (n_classes + 1) times an
    unlabelled one's, as the command line's summary does (both ask vaefunc.plan.plan)."""
    from vaefunc.cli import session
    from vaefunc.plan import plan
    from vaefunc.training import compiles

    plain = vaefunc.VAE((784,), latent_dim=20, hidden=(400,), n_classes=10)
    m2 = vaefunc.VAE((784,), latent_dim=20, hidden=(400,), n_classes=10, semi_supervised=True)
    config, cpu = vaefunc.TrainConfig(batch_size=128, compile="auto"), torch.device("cpu")
    assert not compiles(plain, config, cpu, None, 2000)
    assert compiles(m2, config, cpu, None, 2000)
    rows = 2000 // config.epochs * config.batch_size  # 2000 steps in all, every example labelled
    assert not plan(plain, config, rows=rows, device=cpu).compiled
    assert plan(m2, config, rows=rows, device=cpu, labelled=rows).compiled
    assert session.plan is plan  # the summary derives the run's facts with train's function
