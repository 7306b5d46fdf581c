"""The benchmark harness: it runs end to end on a tiny size and writes valid JSON and Markdown.

No timing is asserted anywhere: only that the numbers exist, are positive, and
that the quality bands (loss finite and decreasing) hold. The roofline's FLOP
count is checked against torch's own FLOP counter, and the reference model
against vaefunc's ELBO.
"""

from __future__ import annotations

import json
import os
import tempfile

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import vaefunc
from benchmarks import reference, report, roofline
import benchmarks.__main__ as bench_main
from benchmarks.__main__ import main
from tests import oracles
from vaefunc.optim import adam
from vaefunc.step import make_step


@pytest.mark.slow
def test_tiny_run_writes_valid_results_and_page(tmp_path, capsys):
    results, doc = tmp_path / "results", tmp_path / "docs" / "BENCHMARKS.md"
    assert main(["--preset", "tiny", "--device", "cpu", "--results", str(results), "--doc", str(doc)]) == 0
    measured = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert any(line.startswith("  conv") for line in measured)
    for line in measured:  # every number printed says what it counts
        assert any(unit in line for unit in ("examples/s", "GFLOP/s", "us/sample", " s ", "skipped")), line
    (path,) = results.glob("*.json")
    res = json.loads(path.read_text())
    assert res["schema"] == 1 and res["info"]["device"] == "cpu" and path.stem == res["machine"]
    steps = [r for r in res["rows"] if r["case"] == "step"]
    assert {r["impl"] for r in steps} == {"reference", "vaefunc-eager"}
    assert {r["batch"] for r in steps} == set(res["sizes"]["batches"])
    for row in steps + [r for r in res["rows"] if r["case"] == "epoch"]:
        assert row["examples_per_s"] > 0 and row["quality_ok"], row
        assert row["loss_last"] < row["loss_first"]
        assert 0 < row["roofline_share"] and row["bound"] in ("matmul", "memory")
    assert all(g["flops_per_s"] > 0 for g in res["gemm"])
    conv = next(r for r in res["rows"] if r["case"] == "conv")
    assert "skipped" in conv or conv["quality_ok"]
    text = doc.read_text()
    assert text.startswith("# Benchmarks")
    for heading in ("### Steady state", "### Train-step throughput vs batch size", "### Targets", "## CUDA"):
        assert heading in text
    assert "Not yet measured" in text  # no CUDA results here
    assert (doc.parent / f"benchmarks-{res['machine']}.png").read_bytes()[:4] == b"\x89PNG"
    # Rendering again from the saved results gives the same page; other JSON files there are ignored.
    (results / "other-results.json").write_text('{"iwae": [1, 2]}')
    assert main(["render", "--results", str(results), "--doc", str(doc)]) == 0
    assert doc.read_text() == text


def test_a_quick_run_writes_to_a_scratch_folder_not_the_published_numbers(tmp_path, monkeypatch, capsys):
    def files():
        return [*report.RESULTS.glob("*"), report.DOC, *report.DOC.parent.glob("benchmarks-*.png")]

    published = {p: p.read_bytes() for p in files()}
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where mkdtemp makes the scratch folder
    assert main(["--preset", "tiny", "--device", "cpu", "--only", "epoch", "--no-plot"]) == 0
    (scratch,) = tmp_path.glob("vaefunc-benchmarks-tiny-*")
    assert str(scratch) in capsys.readouterr().out
    assert len(list((scratch / "results").glob("*.json"))) == 1
    assert (scratch / "BENCHMARKS.md").read_text().startswith("# Benchmarks")
    assert {p: p.read_bytes() for p in files()} == published


@pytest.mark.parametrize(("device", "message"), [
    ("cuda", "--device cuda needs a CUDA GPU"),
    ("tpu", "--device must be cpu or cuda (cuda:N); got 'tpu'"),
])  # fmt: skip
def test_a_device_it_cannot_use_is_one_line_and_exit_2_before_any_work(device, message, monkeypatch, capsys):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    monkeypatch.setattr(bench_main, "run", lambda *a, **k: pytest.fail("ran"))
    assert main(["--quick", "--device", device]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"python -m benchmarks: error: {message}")


def test_a_quick_check_on_a_busy_cpu_runs_on_one_thread_and_restores_it(tmp_path, monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 3.0, 3.0))
    monkeypatch.setattr(bench_main, "run", lambda *a, **k: seen.append((torch.get_num_threads(),
                                                                          os.environ.get("OMP_NUM_THREADS"))) or {
        "rows": []})  # fmt: skip
    monkeypatch.setattr(report, "save_results", lambda results, folder: folder / "x.json")
    monkeypatch.setattr(report, "render", lambda *a, **k: "")
    monkeypatch.setattr(report, "load_results", lambda folder: [])
    threads, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    assert main(["--quick", "--device", "cpu", "--results", str(tmp_path), "--doc", str(tmp_path / "B.md")]) == 0
    assert seen == [(1, "1")] and "one thread" in capsys.readouterr().err
    assert (torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")) == (threads, env)


def test_step_flops_match_torchs_flop_counter():
    params = vaefunc.VAE((64,), latent_dim=4, hidden=(32, 16)).init(0)
    optimizer = adam(1e-3)
    step = make_step(oracles.beta_loss(vaefunc.VAE((64,), latent_dim=4, hidden=(32, 16))), optimizer)
    with FlopCounterMode(display=False) as counter:
        step(params, optimizer.init(params), torch.rand(16, 64), torch.randn(16, 4), torch.tensor(1.0))
    assert counter.get_total_flops() == roofline.step_flops(16, roofline.mlp_layers(64, (32, 16), 4))


def test_reference_is_the_same_model_as_vaefunc():
    """With vaefunc's weights copied in and the same eps, the example's summed loss is -sum(ELBO)."""
    spec = vaefunc.VAE((784,), latent_dim=20, hidden=(400,))
    params = spec.init(0, dtype=torch.float64)
    model = reference.ReferenceVAE().double()
    model.load_state_dict(reference.state_dict_of(params, 20))
    x = torch.rand(8, 784, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.manual_seed(3)
    recon, mu, logvar = model(x)
    torch.manual_seed(3)
    eps = torch.randn_like(mu)
    expected = -spec.elbo(params, x, eps).sum()
    torch.testing.assert_close(reference.loss_function(recon, x, mu, logvar), expected)
    assert sum(p.numel() for p in model.parameters()) == sum(v.numel() for v in params.values())


def test_quality_band_catches_a_rising_or_nan_loss():
    from benchmarks.cases import quality

    assert quality([3.0, 2.0, 1.0])["quality_ok"]
    assert not quality([1.0, 2.0, 3.0])["quality_ok"]
    assert not quality([3.0, float("nan"), 1.0])["quality_ok"]


def test_page_says_not_measured_without_results(tmp_path):
    text = report.render([], tmp_path / "B.md", plots=False)
    assert text.count("Not yet measured") == 2


def test_the_jax_anchor_is_the_same_model_as_vaefunc():
    """With vaefunc's weights copied in and the same eps, the JAX anchor's loss is vaefunc's -mean ELBO."""
    pytest.importorskip("jax")
    pytest.importorskip("optax")
    import jax
    import jax.numpy as jnp

    from benchmarks import jax_anchor

    model = vaefunc.VAE((784,), latent_dim=20, hidden=(400,))
    params = model.init(0)
    dense = {"e1": "encoder.0", "e2": "encoder.2", "d1": "decoder.0", "d2": "decoder.2"}
    jparams = {k: {"w": jnp.asarray(params[f"{v}.weight"].T.numpy()), "b": jnp.asarray(params[f"{v}.bias"].numpy())}
               for k, v in dense.items()}  # fmt: skip
    _, loss = jax_anchor._model(jnp, jax, 784, 400, 20, jnp.float32)
    x = torch.rand(16, 784, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(16, 20, generator=torch.Generator().manual_seed(1))
    value, _ = loss(jparams, jnp.asarray(x.numpy()), jnp.asarray(eps.numpy()))
    expected = -model.elbo(params, x, eps).mean()
    assert float(value) == pytest.approx(float(expected), rel=1e-5)


def test_the_jax_case_says_why_it_is_skipped(monkeypatch):
    from benchmarks import cases, jax_anchor

    monkeypatch.setattr(jax_anchor, "available", lambda: False)
    sizes = cases.PRESETS[("cpu", "quick")]
    (row,) = cases.jax_case(torch.rand(8, 784), sizes=sizes, device=torch.device("cpu"))
    assert row["case"] == "jax" and "pip install -e '.[jax]'" in row["skipped"]
    (row,) = cases.jax_case(torch.rand(8, 784), sizes=sizes, device=torch.device("meta"))
    assert "CPU run" in row["skipped"]


def test_the_cold_compile_is_set_against_jaxs_first_epoch():
    cold = {"case": "subprocess", "mode": "first-step-compiled", "cache": "cold", "step_seconds": 12.0}
    scan = {"case": "jax", "impl": "jax-lax-scan", "precision": "float32", "first_epoch_seconds": 1.5}
    line = report.cold_compile_lines({"rows": [cold, scan]})[0]
    assert "12.0 s" in line and "1.50 s" in line and "(8.0x;" in line
    assert "no JAX row" in report.cold_compile_lines({"rows": [cold]})[0]
    assert report.cold_compile_lines({"rows": [scan]}) == []


def test_thread_and_gemm_tables_name_their_cpu(tmp_path):
    """The threads and GEMM-path sections render from their results files under a heading naming the CPU."""
    import json

    cpu = {"model": "Some CPU", "vendor": "AMD", "flags": ["avx2", "avx512f"], "cores": 2}
    epoch = {"case": "epoch", "load": "one core busy", "step": "eager", "round": 0, "load_average": 2.0,
             "other_cpu_share": 0.1, "test_neg_elbo": 100.0}  # fmt: skip
    threads = {"kind": "threads", "cpu": cpu, "torch": "2.13", "created": "now", "command": "python -m benchmarks.threads",
               "rows": [epoch | {"threads": "1 thread", "examples_per_s": 2000.0, "threads_used": 1},
                        epoch | {"threads": "all cores", "examples_per_s": 100.0, "threads_used": 2},
                        {"case": "quickstart", "load": "one core busy", "version": "old", "round": 0, "wall_seconds": 80.0,
                         "train_seconds": 70.0, "how": "eager, cpu", "load_average": 2.0},
                        {"case": "quickstart", "load": "one core busy", "version": "old", "round": 1, "wall_seconds": 4.0,
                         "train_seconds": 2.0, "how": "eager, cpu", "load_average": 2.0},
                        epoch | {"step": "jax-jit-step", "threads": "XLA's", "examples_per_s": 1600.0},
                        epoch | {"threads": "default", "examples_per_s": 2400.0, "threads_used": 1},
                        {"case": "quickstart script", "load": "as found", "version": "jax jit-step", "round": 0,
                         "wall_seconds": 6.0, "train_seconds": 2.5, "test_neg_elbo": 139.0}]}  # fmt: skip
    gemm = {"kind": "gemm", "cpu": cpu, "torch": "2.13", "created": "now", "command": "python -m benchmarks.gemm_paths",
            "load_before": 1.0, "load_after": 1.0, "bf16_inside_max_rel_error": 1e-3, "epochs": [],
            "gemm": [{"path": p, "m": 128, "k": 784, "n": 400, "threads": 1, "gflops": g}
                     for p, g in (("mkl", 100.0), ("xla", 150.0))]}  # fmt: skip
    for name, res in (("threads-x.json", threads), ("gemm-x.json", gemm), ("other.json", {"kind": "else"})):
        (tmp_path / name).write_text(json.dumps(res))
    extra = report.load_extra(tmp_path)
    assert [r["kind"] for r in extra] == ["gemm", "threads"]
    text = report.render([], tmp_path / "B.md", plots=False, extra=extra)
    assert "## Threads with the cores shared: Some CPU (AMD; ISA flags avx2 avx512f; 2 cores)" in text
    assert "## GEMM paths at the step's shapes: Some CPU (AMD;" in text
    assert "| one core busy | eager | all cores | 2 | 100 | 0.05x |" in text
    assert "| 2 | 42.0 (4.0–80.0) | 20.00x |" in text  # runs, median (fastest–slowest), slowest / fastest
    assert "| one core busy | eager, default threads | JAX jit-step | 1.50 |" in text  # the round's ratio
    assert "| as found | jax jit-step | 1 | 6.00 | 2.50 | 139.00 |" in text
    assert "| 128x784x400 | 100 | 150 |" in text
