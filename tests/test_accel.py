"""The fast paths change how a step runs, never what it computes.

The CUDA-graph path is tested here without a GPU: :class:`GraphedStep` with
``capture=False`` runs the same in-place buffer logic eagerly, and ``train``
is made to take that path on a CPU. Capturing itself needs CUDA (skipped here).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

import vaefunc
from vaefunc import runners
from vaefunc.accel import GraphedStep, autocast_loss, matmul_precision, resolve_autocast
from vaefunc.donate import owned
from tests import oracles
from vaefunc.optim import adam
from vaefunc.step import make_step

D, Z, H, B = 64, 4, (32,), 32


@pytest.fixture
def data():
    return torch.rand(256, D, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def params():
    return vaefunc.VAE((D,), latent_dim=Z, hidden=H).init(0)


def _clone(tree):
    return torch.utils._pytree.tree_map(lambda t: t.clone(), tree)


def _equal(a, b) -> bool:
    la, sa = torch.utils._pytree.tree_flatten(a)
    lb, sb = torch.utils._pytree.tree_flatten(b)
    return sa == sb and all(torch.equal(x, y) for x, y in zip(la, lb))


def test_graphed_step_matches_the_pure_step_and_mutates_nothing(params, data):
    optimizer = adam(1e-3)
    step = make_step(oracles.beta_loss(vaefunc.VAE((D,), latent_dim=Z, hidden=H)), optimizer)
    opt_state = optimizer.init(params)
    before = _clone((params, opt_state))
    eps = torch.randn(5, B, Z, generator=torch.Generator().manual_seed(2))
    beta = torch.tensor(1.0)
    graphed = GraphedStep(step, params, opt_state, data[:B], eps[0], beta, capture=False)
    p, s = params, opt_state
    for i in range(5):
        x = data[i * B : (i + 1) * B]
        p, s, metrics = step(p, s, x, eps[i], beta)
        got = graphed(x, eps[i], beta)
        assert torch.equal(got["loss"], metrics["loss"])
    assert _equal(graphed.state(), (p, s))
    assert _equal((params, opt_state), before)  # the starting point is copied, not advanced
    snapshot = graphed.state()
    graphed(data[:B], eps[0], beta)
    assert _equal(snapshot, (p, s))  # state() returns copies


@pytest.mark.skipif(not torch.cuda.is_available(), reason="capturing a CUDA graph needs CUDA")
def test_captured_graph_replays_the_pure_step_on_cuda(params, data):
    """Replays of the captured (uncompiled) step follow the pure loop (float32 tolerance:
    cuBLAS may pick other kernels under capture)."""
    dev = torch.device("cuda")
    optimizer = adam(1e-3)
    step = make_step(oracles.beta_loss(vaefunc.VAE((D,), latent_dim=Z, hidden=H)), optimizer)
    p = {k: v.to(dev) for k, v in params.items()}
    s = optimizer.init(p)
    x, eps, beta = data.to(dev), torch.randn(8, B, Z, device=dev), torch.tensor(1.0, device=dev)
    graphed = GraphedStep(step, p, s, x[:B], eps[0], beta, capture=True)
    assert graphed.graph is not None
    for i in range(8):
        xi = x[i * B : (i + 1) * B]
        p, s, metrics = step(p, s, xi, eps[i], beta)
        torch.testing.assert_close(graphed(xi, eps[i], beta)["loss"], metrics["loss"])
    torch.testing.assert_close(graphed.state(), (p, s))


def test_graphed_step_refuses_to_capture_off_cuda(params, data):
    optimizer = adam(1e-3)
    step = make_step(oracles.beta_loss(vaefunc.VAE((D,), latent_dim=Z, hidden=H)), optimizer)
    with pytest.raises(ValueError, match="CUDA"):
        GraphedStep(step, params, optimizer.init(params), data[:B], torch.zeros(B, Z), torch.tensor(1.0))


def test_train_through_the_graph_buffers_is_bit_identical(params, data, monkeypatch):
    """The loop ``train`` runs on CUDA (buffers advanced in place, snapshots at sync
    points), here without capture on a CPU, gives the same params as the plain loop.

    An explicit optimizer makes both loops run the same pure step (with the
    default Adam, the eager CPU loop uses the fused in-place kernel instead)."""
    opts = dict(epochs=2, batch_size=B, compile=False, progress=False, optimizer=adam(1e-3))
    plain = vaefunc.train(params, data, **opts)
    monkeypatch.setattr(runners, "use_cuda_graph", lambda *args, **kw: True)
    graphed = vaefunc.train(params, data, **opts)
    assert _equal(plain.params, graphed.params)
    assert _equal(plain.opt_state, graphed.opt_state)
    assert [h["loss"] for h in plain.history] == [h["loss"] for h in graphed.history]


def test_train_through_the_graph_buffers_stops_and_resumes(params, data, monkeypatch):
    """should_stop mid-epoch returns a snapshot; resuming finishes the run exactly."""
    monkeypatch.setattr(runners, "use_cuda_graph", lambda *args, **kw: True)
    full = vaefunc.train(params, data, epochs=2, batch_size=B, compile=False, progress=False)
    calls = iter(range(100))
    part = vaefunc.train(params, data, epochs=2, batch_size=B, compile=False, progress=False,
                         should_stop=lambda: next(calls) == 10)  # fmt: skip
    assert part.interrupted
    rest = vaefunc.train(params, data, epochs=2, batch_size=B, compile=False, progress=False, resume=part.state)
    assert _equal(full.params, rest.params)


def test_bf16_autocast_runs_and_stays_close_to_float32(params, data):
    """bf16 matmuls change the numbers a little (so autocast is on), not the training."""
    f32 = vaefunc.train(params, data, epochs=3, batch_size=B, compile=False, progress=False)
    bf16 = vaefunc.train(params, data, epochs=3, batch_size=B, compile=False, progress=False, autocast="bf16")
    losses32 = torch.tensor([h["loss"] for h in f32.history])
    losses16 = torch.tensor([h["loss"] for h in bf16.history])
    assert not torch.equal(losses32, losses16)
    torch.testing.assert_close(losses16, losses32, rtol=1e-2, atol=0.0)
    assert all(v.dtype == torch.float32 for v in bf16.params.values())


def test_bf16_autocast_sums_the_elbo_in_float32(params, data):
    loss_fn = autocast_loss(oracles.beta_loss(vaefunc.VAE((D,), latent_dim=Z, hidden=H)), "cpu", "bf16")
    loss, metrics = loss_fn(params, data[:B], torch.randn(B, Z), torch.tensor(1.0))
    assert loss.dtype == torch.float32
    assert all(m.dtype == torch.float32 for m in metrics.values())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mu, _ = vaefunc.VAE.from_params(params).encode(params, data[:B])
    assert mu.dtype == torch.bfloat16  # the layers do run in bf16 under autocast


def test_bad_fast_path_options_are_refused_before_work(params, data):
    with pytest.raises(ValueError, match="autocast"):
        vaefunc.train(params, data, epochs=1, batch_size=B, autocast="fp8", progress=False)
    with pytest.raises(ValueError, match="tf32"):
        vaefunc.train(params, data, epochs=1, batch_size=B, tf32="yes", progress=False)


def test_tf32_is_a_no_op_on_cpu_and_restored_after():
    before = torch.get_float32_matmul_precision()
    with matmul_precision(True, torch.device("cpu")):
        assert torch.get_float32_matmul_precision() == before
    assert torch.get_float32_matmul_precision() == before


@pytest.mark.compile
# Inductor's import of torch.utils.mkldnn warns about torch.jit (torch's own deprecation).
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_changing_lr_beta_and_step_never_recompiles(params, data):
    """lr, beta and the step count enter the compiled step as tensors: after the
    first compile, neither new values nor a second ``train`` call recompile
    (``train`` reuses its compiled step)."""
    torch._dynamo.reset()
    autocast = resolve_autocast("auto", torch.device("cpu"), torch.float32, compiled=True)  # what train picks
    plan = runners.Plan(vaefunc.VAE((D,), latent_dim=Z, hidden=H), "elbo", "beta", 0.0,
                        importlib.import_module("vaefunc.training").default_optimizer(0.9, 0.999, 1e-8, None), True, "cpu",
                        autocast)  # fmt: skip
    advance = runners._advance(plan)  # what the loop runs
    p, s = owned((params, adam(1e-3).init(params)))  # advance overwrites them in place
    eps = torch.randn(B, Z)
    capacity = torch.tensor(0.0)  # the loss takes (beta, capacity), as train passes them
    advance(p, s, data[:B], eps, torch.tensor(1.0), capacity)  # compiles
    with torch.compiler.set_stance("fail_on_recompile"):
        for i, (lr, beta) in enumerate([(5e-4, 0.5), (1e-4, 2.0)]):
            adam_state, lr_state = s
            s = (adam_state, lr_state._replace(lr=torch.tensor(lr)))
            metrics = advance(p, s, data[B : 2 * B], eps, torch.tensor(beta), capacity)
            assert int(s[0].count) == i + 2
        result = vaefunc.train(params, data, epochs=2, batch_size=B, lr=3e-3, beta=0.7, compile=True, progress=False)
    assert torch.isfinite(metrics["loss"])
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_autocast_auto_is_bf16_only_for_a_compiled_float32_step_on_bf16_matrix_units(monkeypatch):
    import vaefunc.accel as accel

    cpu = torch.device("cpu")
    for units in (True, False):
        monkeypatch.setattr(accel, "bf16_matmul_units", lambda device, units=units: units and device.type == "cpu")
        assert resolve_autocast("auto", cpu, torch.float32, compiled=True) == ("bf16" if units else None)
        assert resolve_autocast("auto", cpu, torch.float32, compiled=False) is None  # eager stays float32
        assert resolve_autocast("auto", cpu, torch.float64, compiled=True) is None  # reference runs stay float64
        assert resolve_autocast("auto", torch.device("cuda"), torch.float32, compiled=True) is None
        assert resolve_autocast(None, cpu, torch.float32, compiled=True) is None  # the float32 switch
        assert resolve_autocast("bf16", cpu, torch.float32, compiled=False) == "bf16"
    assert vaefunc.TrainConfig().autocast == "auto"
    assert accel.bf16_matmul_units(torch.device("meta")) is False


@pytest.mark.parametrize("amx, avx512_bf16, speedup, chosen", [
    (True, True, None, True),  # AMX-BF16 tiles: bf16, nothing timed
    (False, False, None, False),  # no bf16 instructions: float32, nothing timed
    (False, True, 2.0, True),  # AVX512_BF16 (AMD Zen 4): bf16 where the timed GEMM says so
    (False, True, 1.1, False),
])  # fmt: skip
def test_bf16_matmul_units_times_a_gemm_only_without_amx(monkeypatch, amx, avx512_bf16, speedup, chosen):
    import vaefunc.accel as accel

    timed = []
    accel._bf16_gemm_faster.cache_clear()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"amx_bf16": amx, "avx512_bf16": avx512_bf16})
    monkeypatch.setattr(accel, "bf16_gemm_speedup", lambda: timed.append(1) or speedup)
    cpu = torch.device("cpu")
    assert accel.bf16_matmul_units(cpu) is chosen and accel.bf16_matmul_units(cpu) is chosen
    assert timed == ([1] if speedup is not None else [])  # timed once per process, then cached
    assert resolve_autocast("auto", cpu, torch.float32, compiled=True) == ("bf16" if chosen else None)
    accel._bf16_gemm_faster.cache_clear()  # the next caller times this machine, not the stub


def test_bf16_gemm_speedup_times_both_dtypes_on_one_thread_and_restores_the_count():
    import vaefunc.accel as accel

    before, seen = torch.get_num_threads(), []

    def clock():
        seen.append(torch.get_num_threads())
        return float(len(seen))

    ratio = accel.bf16_gemm_speedup(4, 8, 4, repeats=2, timer=clock)
    assert ratio == 1.0 and set(seen) == {1} and len(seen) == 2 * 2 * 3  # start/stop, 2 dtypes, warm-up + 2
    assert torch.get_num_threads() == before


def test_inductor_options_skip_the_isa_dry_compiles_only_where_torch_runs_that_isa(monkeypatch):
    import platform

    from torch._inductor import config

    from vaefunc.accel import inductor_options

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    before = config.cpp.vec_isa_ok, config.cpp.simdlen
    with config.patch({"cpp.vec_isa_ok": None, "cpp.simdlen": None}):  # not monkeypatch: Inductor's config is a proxy
        for capability, expected in (("AVX512", {"cpp.vec_isa_ok": True, "cpp.simdlen": 512}),
                                     ("AVX2", {"cpp.vec_isa_ok": True, "cpp.simdlen": 256}),
                                     ("DEFAULT", {"cpp.simdlen": 1}), ("NO AVX", {})):  # fmt: skip
            monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
            assert inductor_options() == expected, capability
        monkeypatch.setattr(platform, "machine", lambda: "aarch64")  # NEON, SVE: Inductor picks as it does
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
        assert inductor_options() == {}
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    for users in (True, False):  # TORCHINDUCTOR_VEC_ISA_OK=1 or =0, or a simdlen: the user's choice stands
        with config.patch({"cpp.vec_isa_ok": users, "cpp.simdlen": 256}):
            assert inductor_options() == {}
    assert (config.cpp.vec_isa_ok, config.cpp.simdlen) == before


@pytest.mark.slow
@pytest.mark.compile
def test_a_graph_compiled_under_one_cpu_capability_is_not_served_to_another(tmp_path):
    """torch 2.13's FX graph cache leaves the vector ISA out of its key; vaefunc's compiles put it in, so a
    process with ATEN_CPU_CAPABILITY=avx2 and one with the default share a cache directory safely."""
    import os
    import subprocess
    import sys

    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        pytest.skip("needs a CPU whose torch runs AVX-512 kernels, to compare them with AVX2 ones")
    # With plain torch.compile, the second process reads the AVX2 graph and aborts ("double free or
    # corruption") or computes wrong numbers.
    probe = ("import torch, vaefunc.accel as a\n"
             "x, f = torch.randn(1000, generator=torch.Generator().manual_seed(0)), lambda x: (x * 2).relu()\n"
             "print(float((a.compile_graph(f)(x) - f(x)).abs().max()))\n")  # fmt: skip
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}  # fmt: skip
    for capability in ("avx2", None):  # fill the cache under AVX2, then read it under AVX-512
        run_env = {k: v for k, v in env.items() if k != "ATEN_CPU_CAPABILITY"}
        run_env |= {"ATEN_CPU_CAPABILITY": capability} if capability else {}
        out = subprocess.run([sys.executable, "-c", probe], env=run_env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0 and float(out.stdout) < 1e-4, (capability, out.stdout, out.stderr[-2000:])
