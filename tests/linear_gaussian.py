"""An exact oracle for the gradients of the ELBO and the IWAE bound: the linear-Gaussian VAE.

p(z) = N(0, I), p(x|z) = N(W z + b, s^2 I) and q(z|x) = N(A x + c, diag exp(V x + v))
is vaefunc's ``VAE((d,), latent_dim=z, hidden=(), likelihood="gaussian", obs_std=s)``
(the encoder's one linear layer stacks [A; V], its bias [c; v]). Its log
importance weight log w(eps) = log p(x, z) - log q(z|x) at z = mu + sigma * eps is
written here from the densities, independently of vaefunc.

The expected IWAE bound has no closed form for k > 1, but it is a 1-D integral
whatever k (Frullani's integral, log S = int_0^inf (e^-t - e^-tS) dt / t, and the
independence of the k weights):

    E[iwae_k] = m - log k + int (exp(-e^u) - phi(e^u)^k) du,   phi(t) = E[exp(-t w / e^m)],

with m = log E[w] = log p(x). phi is a Gaussian expectation over eps, computed
by the trapezoid rule on a fine grid (1-D for z = 1, a tensor grid for z = 2),
the u-integral by the trapezoid rule too, all in float64; its gradient with
respect to every parameter is autograd's. At k = 1 it equals the closed-form
ELBO to ~1e-10 (tests/test_gradients.py checks it), far below any estimator's
standard error.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

import vaefunc

F64 = torch.float64
LOG_2PI = math.log(2 * math.pi)


def model_of(d: int, z: int, s: float) -> vaefunc.VAE:
    return vaefunc.VAE((d,), latent_dim=z, hidden=(), likelihood="gaussian", obs_std=s)


def random_params(d: int, z: int, seed: int, *, enc_scale: float = 0.5, dec_scale: float = 1.0) -> dict[str, Tensor]:
    """A random linear-Gaussian VAE's params (float64): decoder W (d, z), b; encoder [A; V] (2z, d), [c; v]."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *shape: torch.randn(*shape, generator=g, dtype=F64)  # noqa: E731
    return {"encoder.0.weight": enc_scale * rnd(2 * z, d), "encoder.0.bias": enc_scale * rnd(2 * z),
            "decoder.0.weight": dec_scale * rnd(d, z), "decoder.0.bias": rnd(d)}  # fmt: skip


def near_posterior(d: int, z: int, seed: int, s: float, *, shift: float = 0.3) -> dict[str, Tensor]:
    """A model whose encoder is its exact posterior's, perturbed by N(0, shift^2) in every encoder param:
    a realistic, imperfect q whose weights spread over a few nats (the oracle stays cheap)."""
    params = exact_posterior(random_params(d, z, seed), s)
    g = torch.Generator().manual_seed(seed + 10_000)
    return params | {k: v + shift * torch.randn(v.shape, generator=g, dtype=F64)
                     for k, v in params.items() if k.startswith("encoder.")}  # fmt: skip


def exact_posterior(params: dict[str, Tensor], s: float) -> dict[str, Tensor]:
    """The params with the encoder set to the exact posterior, when W's columns are orthogonal:
    p(z|x) = N(P W^T (x - b) / s^2, P), P = (I + W^T W / s^2)^-1 diagonal."""
    w, b = params["decoder.0.weight"], params["decoder.0.bias"]
    z = w.shape[1]
    q, _ = torch.linalg.qr(w)
    w = q * w.norm(dim=0)  # orthogonal columns of the same lengths
    post = 1.0 / (1.0 + (w * w).sum(0) / s**2)
    a = post[:, None] * w.T / s**2
    return params | {"decoder.0.weight": w, "encoder.0.weight": torch.cat([a, torch.zeros(z, w.shape[0], dtype=F64)]),
                     "encoder.0.bias": torch.cat([-a @ b, post.log()])}  # fmt: skip


def log_weight(params: dict[str, Tensor], x: Tensor, eps: Tensor, s: float) -> Tensor:
    """log p(x|z) + log p(z) - log q(z|x) at z = mu + sigma * eps: x (d,), eps (..., z) -> (...,)."""
    z_dim = eps.shape[-1]
    enc = params["encoder.0.weight"] @ x + params["encoder.0.bias"]
    mu, logvar = enc[:z_dim], enc[z_dim:]
    z = mu + (0.5 * logvar).exp() * eps
    mean = z @ params["decoder.0.weight"].T + params["decoder.0.bias"]
    log_px = (-0.5 * ((x - mean) / s).square() - math.log(s) - 0.5 * LOG_2PI).sum(-1)
    log_pz = (-0.5 * z.square() - 0.5 * LOG_2PI).sum(-1)
    log_qz = (-0.5 * eps.square() - 0.5 * logvar - 0.5 * LOG_2PI).sum(-1)
    return log_px + log_pz - log_qz


def _grid(z: int, n: int, half_width: float = 9.0) -> tuple[Tensor, Tensor]:
    """Trapezoid nodes (G, z) and log-weights (G,) for E over eps ~ N(0, I_z)."""
    t = torch.linspace(-half_width, half_width, n, dtype=F64)
    w1 = torch.full((n,), 2 * half_width / (n - 1), dtype=F64)
    w1[0] = w1[-1] = w1[0] / 2
    log_w1 = w1.log() - 0.5 * t.square() - 0.5 * LOG_2PI
    nodes = torch.cartesian_prod(*[t] * z).reshape(-1, z)
    log_w = torch.stack(torch.meshgrid(*[log_w1] * z, indexing="ij"), -1).sum(-1).reshape(-1)
    return nodes, log_w


def expected_iwae(params: dict[str, Tensor], x: Tensor, k: int, s: float, *, n_eps: int | None = None,
                  n_u: int = 1500, du: float = 0.05) -> Tensor:  # fmt: skip
    """E_eps[log (1/k) sum_i w(eps_i)] for one example x (d,), differentiable in the params: 0-d."""
    z = params["decoder.0.weight"].shape[1]
    nodes, log_q = _grid(z, n_eps or (2001 if z == 1 else 201))
    keep = log_q > -60.0  # nodes of no mass (e^-60) left out: their weights may overflow
    nodes, log_q = nodes[keep], log_q[keep]
    lw = log_weight(params, x, nodes, s)  # (G,)
    m = torch.logsumexp(lw + log_q, 0)  # log E[w] = log p(x)
    # t = e^u spans the weights' range: below 1 / max(w / E[w]) the integrand is ~(k - 1) t; above 1 / r,
    # where P(w / E[w] < r) = 1e-30, phi(t)^k is below 1e-30 too.
    rel = (lw - m).detach()
    order = rel.argsort()
    mass = torch.cumsum(log_q[order].exp(), 0)
    low = rel[order][int(torch.searchsorted(mass, torch.tensor(1e-30, dtype=F64)))]
    u_min, u_max = float(-rel.max()) - 35.0, min(float(-low) + 10.0, 650.0)
    u = torch.linspace(u_min, u_max, max(n_u, int((u_max - u_min) / du)), dtype=F64)
    scaled = torch.exp(lw - m)  # w / E[w]
    log_phi = torch.logsumexp(log_q - torch.exp(u)[:, None] * scaled, dim=1)  # (n_u,)
    integrand = torch.exp(-torch.exp(u)) - torch.exp(k * log_phi)
    return m - math.log(k) + torch.trapezoid(integrand, u)


def exact_gradient(params: dict[str, Tensor], x: Tensor, k: int, s: float, **grid) -> dict[str, Tensor]:
    """d E[iwae_k] / d params, by autograd through :func:`expected_iwae` (k = 1: the ELBO's gradient)."""
    return torch.func.grad(lambda p: expected_iwae(p, x, k, s, **grid))(params)


def closed_form_elbo(params: dict[str, Tensor], x: Tensor, s: float) -> Tensor:
    """E_q[log p(x|z)] - KL(q || N(0, I)) in closed form: 0-d."""
    w, b = params["decoder.0.weight"], params["decoder.0.bias"]
    z = w.shape[1]
    enc = params["encoder.0.weight"] @ x + params["encoder.0.bias"]
    mu, logvar = enc[:z], enc[z:]
    sq = (x - w @ mu - b).square().sum() + (logvar.exp() * (w * w).sum(0)).sum()
    rec = -0.5 * sq / s**2 - x.numel() * (math.log(s) + 0.5 * LOG_2PI)
    return rec - 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum()
