"""The anomaly scores: -log p(x), the negative ELBO and the reconstruction error, by name."""

from __future__ import annotations

import pytest
import torch

import vaefunc
from vaefunc import metrics

F64 = torch.float64


def test_the_three_anomaly_scores_are_what_they_say():
    model = vaefunc.VAE((12,), latent_dim=2, hidden=(6,))
    params = model.init(seed=0, dtype=F64)
    x = torch.rand(9, 12, generator=torch.Generator().manual_seed(2), dtype=F64)
    recon = vaefunc.anomaly_score(params, x, score="recon", model=model)
    mu, _ = model.encode(params, x)
    torch.testing.assert_close(recon, -model.log_px(params, model.decode(params, mu), x))
    elbo = vaefunc.anomaly_score(params, x, score="elbo", seed=3, model=model)
    eps = torch.randn(9, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    torch.testing.assert_close(elbo, -model.elbo(params, x, eps))
    nll = vaefunc.anomaly_score(params, x, k=50, model=model)
    torch.testing.assert_close(nll, -model.log_likelihood(params, x, k=50))
    assert recon.shape == elbo.shape == nll.shape == (9,)
    with pytest.raises(ValueError, match=r"score must be one of \('nll', 'elbo', 'recon'\)"):
        vaefunc.anomaly_score(params, x, score="mse", model=model)
    assert metrics.roc_auc(recon, torch.arange(9) % 2) >= 0.0
