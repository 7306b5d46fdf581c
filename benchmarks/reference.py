"""The canonical eager PyTorch VAE, as pytorch/examples' ``vae/main.py`` writes it.

This is what vaefunc is measured against: an ``nn.Module`` (784-400-20 with ReLU,
separate ``fc21``/``fc22`` heads for mu and logvar, a sigmoid decoder scored
with ``binary_cross_entropy`` summed over the batch), a ``DataLoader`` over a
``TensorDataset`` with ``shuffle=True`` and the default ``drop_last=False``,
``torch.optim.Adam``, and ``loss.item()`` read every step to accumulate the
epoch's loss. Nothing here is tuned: it is the loop people copy.

The widths are parameters so the same reference serves the hidden-2048 case;
with ``hidden=400, latent=20`` it is exactly the example's model. Its FLOPs per
step equal vaefunc's (the two heads together are one 400 -> 40 layer).

Axis letters: b batch, d data features, h hidden, z latent, k importance samples.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset


class ReferenceVAE(nn.Module):
    """pytorch/examples' VAE with configurable widths: d -> h -> (z, z); z -> h -> d."""

    def __init__(self, d: int = 784, hidden: int = 400, latent: int = 20):
        super().__init__()
        self.d = d
        self.fc1 = nn.Linear(d, hidden)
        self.fc21 = nn.Linear(hidden, latent)
        self.fc22 = nn.Linear(hidden, latent)
        self.fc3 = nn.Linear(latent, hidden)
        self.fc4 = nn.Linear(hidden, d)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu: Tensor, logvar: Tensor) -> Tensor:
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z: Tensor) -> Tensor:
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mu, logvar = self.encode(x.view(-1, self.d))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def loss_function(recon_x: Tensor, x: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Reconstruction + KL divergence, summed over all elements and the batch (the example's loss)."""
    bce = F.binary_cross_entropy(recon_x, x.view(-1, recon_x.shape[-1]), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def make_reference(d: int, hidden: int, latent: int, *, seed: int, device: torch.device | str = "cpu"):
    """A fresh model and its Adam optimizer (lr 1e-3), seeded like the example."""
    torch.manual_seed(seed)
    model = ReferenceVAE(d, hidden, latent).to(device)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def state_dict_of(params: dict[str, Tensor], latent: int) -> dict[str, Tensor]:
    """vaefunc's MLP params (one hidden layer) as the example's state dict: the encoder's last layer
    splits into the mu head ``fc21`` and the logvar head ``fc22``."""
    enc_w, enc_b = params["encoder.2.weight"], params["encoder.2.bias"]
    return {
        "fc1.weight": params["encoder.0.weight"], "fc1.bias": params["encoder.0.bias"],
        "fc21.weight": enc_w[:latent], "fc21.bias": enc_b[:latent],
        "fc22.weight": enc_w[latent:], "fc22.bias": enc_b[latent:],
        "fc3.weight": params["decoder.0.weight"], "fc3.bias": params["decoder.0.bias"],
        "fc4.weight": params["decoder.2.weight"], "fc4.bias": params["decoder.2.bias"],
    }  # fmt: skip


def train_step(model: ReferenceVAE, optimizer: torch.optim.Optimizer, data: Tensor) -> float:
    """One step of the example's loop; returns ``loss.item()`` (a host sync, as there)."""
    optimizer.zero_grad()
    recon_batch, mu, logvar = model(data)
    loss = loss_function(recon_batch, data, mu, logvar)
    loss.backward()
    value = loss.item()
    optimizer.step()
    return value


def train_epoch(
    model: ReferenceVAE, optimizer: torch.optim.Optimizer, loader: DataLoader, device: torch.device | str
) -> tuple[float, int]:
    """One epoch of the example's ``train``; returns (mean loss per example, examples seen)."""
    model.train()
    train_loss, seen = 0.0, 0
    for data, in loader:
        data = data.to(device)
        train_loss += train_step(model, optimizer, data)
        seen += data.shape[0]
    return train_loss / seen, seen


def make_loader(x: Tensor, batch_size: int, *, seed: int) -> DataLoader:
    """The example's loader: shuffled, ``drop_last=False``, over a ``TensorDataset`` in host memory."""
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(x.cpu()), batch_size=batch_size, shuffle=True, generator=gen)


def train(
    x: Tensor,
    *,
    epochs: int,
    batch_size: int = 128,
    hidden: int = 400,
    latent: int = 20,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict:
    """Train the reference end to end; returns per-epoch losses and seconds.

    Args:
        x: (n, d) in [0, 1], on the host (the example's data lives there).

    Returns:
        {"loss": [per-example loss of each epoch], "seconds": [...], "examples": int}
    """
    model, optimizer = make_reference(x.shape[1], hidden, latent, seed=seed, device=device)
    loader = make_loader(x, batch_size, seed=seed)
    losses, seconds, seen = [], [], 0
    for _ in range(epochs):
        t0 = time.perf_counter()
        loss, seen = train_epoch(model, optimizer, loader, device)
        _sync(device)
        seconds.append(time.perf_counter() - t0)
        losses.append(loss)
    return {"loss": losses, "seconds": seconds, "examples": seen}


@torch.no_grad()
def log_likelihood(model: ReferenceVAE, x: Tensor, *, k: int, chunk: int = 500) -> Tensor:
    """The importance-weighted estimate of log p(x) with k samples, written plainly.

    log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log k,
    z_k ~ q(z|x). The examples go one at a time and the k samples in chunks, as
    a straightforward eager implementation does.

    Args:
        x: (b, d).

    Returns:
        (b,) in nats.
    """
    out = []
    for xi in x:
        mu, logvar = model.encode(xi.view(1, -1))
        std = torch.exp(0.5 * logvar)
        terms = []
        for start in range(0, k, chunk):
            eps = torch.randn(min(chunk, k - start), mu.shape[-1], device=x.device)
            z = mu + std * eps
            logits = model.fc4(F.relu(model.fc3(z)))
            log_px = -F.binary_cross_entropy_with_logits(logits, xi.expand_as(logits), reduction="none").sum(-1)
            log_pz = -0.5 * (z.square() + math.log(2 * math.pi)).sum(-1)
            log_qz = -0.5 * (eps.square() + logvar + math.log(2 * math.pi)).sum(-1)
            terms.append(log_px + log_pz - log_qz)
        out.append(torch.logsumexp(torch.cat(terms), 0) - math.log(k))
    return torch.stack(out)


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
