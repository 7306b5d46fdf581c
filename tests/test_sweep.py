"""vaefunc.sweep: a beta sweep trained at once, its rate/distortion and its plot."""

from __future__ import annotations

import torch

from vaefunc.sweep import beta_sweep, plot_rate_distortion, rate_distortion


def test_beta_sweep_trades_rate_for_distortion_and_plots(tmp_path):
    x = torch.rand(160, 64, generator=torch.Generator().manual_seed(0))
    x = (x > 0.7).float()  # sparse binary "images"
    sweep = beta_sweep(x[:128], x[128:], betas=(0.5, 4.0), latent_dim=4, hidden=(32,), epochs=3,
                       batch_size=16, lr=3e-3, compile=False, progress=False)  # fmt: skip
    assert sweep.rate[0] > sweep.rate[1]  # more KL weight, less rate
    rate, dist = rate_distortion(sweep.params, x[128:])
    assert rate.tolist() == sweep.rate and dist.tolist() == sweep.distortion  # deterministic: fixed eps
    path = plot_rate_distortion(sweep, tmp_path / "rd.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_python_m_vaefunc_sweep_off_a_terminal_prints_a_line_at_least_every_10_s(tmp_path, monkeypatch, capsys):
    from vaefunc import _progress, sweep

    x = (torch.rand(160, 64, generator=torch.Generator().manual_seed(0)) > 0.7).float()
    monkeypatch.setattr(sweep, "_mnist5k", lambda: (x[:128], x[128:]))
    monkeypatch.setattr(_progress, "EVERY", 0.0)  # a line at every step instead of every 10 s
    assert sweep.main(["--betas", "0.5", "4", "--epochs", "1", "--out", str(tmp_path / "bs.png")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("python -m vaefunc.sweep: training 128/128 examples (100%), ")
