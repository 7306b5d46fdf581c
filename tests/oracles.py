"""Independent reference implementations the tests compare vaefunc against.

Nothing here imports vaefunc's maths: the VAE is an ``nn.Module`` written the
ordinary PyTorch way (batched tensors, autograd), the optimizer is
``torch.optim.Adam(foreach=False)``, and distributions come from
``torch.distributions``.

Axis letters: b batch, d data features, h hidden, z latent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Bernoulli, Normal, kl_divergence

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0  # the clamp vaefunc.encode documents


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Sequential(Linear, ReLU, ..., Linear) through ``sizes`` (input first)."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(d_in, d_out))
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """The VAE vaefunc implements, as a module with the same state-dict keys.

    ``encoder = Sequential(Linear(d, h1), ReLU, ..., Linear(h_n, 2z))`` outputs
    mu and logvar stacked; ``decoder`` mirrors it, ``Linear(z, h_n) ... Linear(h1, d)``.
    """

    def __init__(self, d: int, latent_dim: int, hidden: Sequence[int] = ()):
        super().__init__()
        hidden = tuple(hidden)
        self.encoder = mlp((d, *hidden, 2 * latent_dim))
        self.decoder = mlp((latent_dim, *hidden[::-1], d))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (b, d) -> mu, logvar: (b, z)."""
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def forward(
        self, x: Tensor, eps: Tensor, *, likelihood: str = "bernoulli", obs_std: float = 1.0
    ) -> tuple[Tensor, Tensor]:
        """Batched single-sample ELBO terms: x (b, d), eps (b, z) -> rec (b,), kl (b,)."""
        mu, logvar = self.encode(x)
        out = self.decoder(mu + torch.exp(0.5 * logvar) * eps)
        return log_likelihood(out, x, likelihood=likelihood, obs_std=obs_std), kl_normal(mu, logvar)


def make_vae(
    d: int, latent_dim: int, hidden: Sequence[int] = (), *, seed: int | None = None, dtype=torch.float32
) -> VAE:
    """A :class:`VAE`; with ``seed``, built right after ``torch.manual_seed(seed)``.

    Touches the global RNG when ``seed`` is given (conftest restores it).
    """
    if seed is not None:
        torch.manual_seed(seed)
    return VAE(d, latent_dim, hidden).to(dtype)


def kl_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) summed over z, by torch.distributions."""
    q = Normal(mu, torch.exp(0.5 * logvar))
    p = Normal(torch.zeros_like(mu), torch.ones_like(mu))
    return kl_divergence(q, p).sum(-1)


def log_likelihood(out: Tensor, x: Tensor, *, likelihood: str, obs_std: float = 1.0) -> Tensor:
    """log p(x | decoder output) summed over d, by torch.distributions (x in [0, 1] allowed)."""
    if likelihood == "bernoulli":
        # Bernoulli.log_prob validates x in {0, 1}; for intensities use the same cross-entropy.
        if bool(((x == 0) | (x == 1)).all()):
            return Bernoulli(logits=out).log_prob(x).sum(-1)
        return -F.binary_cross_entropy_with_logits(out, x, reduction="none").sum(-1)
    if likelihood == "gaussian":
        return Normal(out, torch.full_like(out, obs_std)).log_prob(x).sum(-1)
    raise ValueError(likelihood)


def batched_elbo(
    params: dict[str, Tensor],
    x: Tensor,
    eps: Tensor,
    *,
    beta: float = 1.0,
    likelihood: str = "bernoulli",
    obs_std: float = 1.0,
) -> Tensor:
    """The per-example ELBO computed directly on (b, d) tensors by the module: (b,)."""
    d = params["encoder.0.weight"].shape[1]
    z = params["decoder.0.weight"].shape[1]
    hidden = tuple(params[k].shape[0] for k in params if k.startswith("encoder.") and k.endswith("weight"))[:-1]
    w = params["encoder.0.weight"]
    module = VAE(d, z, hidden).to(dtype=w.dtype, device=w.device)
    rec, kl = torch.func.functional_call(
        module, params, (x.reshape(x.shape[0], d), eps), {"likelihood": likelihood, "obs_std": obs_std}
    )
    return rec - beta * kl


def adam_reference(params: dict[str, Tensor], grad_fn, steps: int, *, lr: float, b1=0.9, b2=0.999, eps=1e-8):
    """Run ``torch.optim.Adam(foreach=False)`` for ``steps`` steps on clones of ``params``.

    ``grad_fn(params, t) -> grads`` gives the gradient at step t (0-based) from the
    oracle's own current params. Returns the list of param dicts after each step.
    """
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    opt = torch.optim.Adam(list(leaves.values()), lr=lr, betas=(b1, b2), eps=eps, foreach=False)
    out = []
    for t in range(steps):
        grads = grad_fn({k: p.detach() for k, p in leaves.items()}, t)
        for k, p in leaves.items():
            p.grad = grads[k].clone()
        opt.step()
        out.append({k: p.detach().clone() for k, p in leaves.items()})
    return out


def gaussian_log_norm(d: int, obs_std: float = 1.0) -> float:
    """The normalising constant of N(x; m, obs_std^2 I_d): -d/2 log(2 pi obs_std^2)."""
    return -0.5 * d * math.log(2.0 * math.pi * obs_std**2)


# Tree helpers for purity tests: compare everything with atol=0.


def clone_tree(tree):
    """A deep copy of a tree of tensors, dicts, tuples and NamedTuples."""
    if isinstance(tree, torch.Tensor):
        return tree.clone()
    if isinstance(tree, dict):
        return {k: clone_tree(v) for k, v in tree.items()}
    if isinstance(tree, tuple):
        return type(tree)(*map(clone_tree, tree)) if hasattr(tree, "_fields") else tuple(map(clone_tree, tree))
    return tree


def assert_identical(a, b):
    """Same structure and bit-identical tensors (atol=0)."""
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_identical(a[k], b[k])
    elif isinstance(a, tuple):
        assert type(a) is type(b) and len(a) == len(b)
        for u, v in zip(a, b):
            assert_identical(u, v)
    else:
        assert a == b


def beta_loss(model):
    """``model.loss()`` with the capacity held at 0: ``loss_fn(params, x, eps, beta, *, y=None)``, the
    step signature (x, eps, beta) the step and buffer tests drive."""
    loss = model.loss()

    def loss_fn(params, x, eps, beta, *, y=None):
        return loss(params, x, eps, beta, torch.zeros_like(beta), y)

    return loss_fn
