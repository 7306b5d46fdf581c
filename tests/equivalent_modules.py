"""nn.Module twins of vaefunc's param layouts, the oracles of the model tests.

``EquivalentVAE(params)`` builds the ``encoder`` and ``decoder`` ``nn.Sequential``
that the keys and shapes describe (see vaefunc/model.py), so ``load_state_dict(params)``
works and ``functional_call(vae, params, (x, eps))`` evaluates the same ELBO with
torch's own layers and a batched formula (no vmap). ``activation`` picks the
hidden activation's module (``nn.ReLU`` by default, ``nn.Tanh`` for "tanh", ...).
"""

from __future__ import annotations

import torch
from torch import nn

from vaefunc.model import architecture


ACT_MODULES = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "softplus": nn.Softplus, "gelu": nn.GELU,
               "silu": nn.SiLU}  # fmt: skip


class EquivalentVAE(nn.Module):
    def __init__(self, params: dict[str, torch.Tensor], activation: str = "relu"):
        super().__init__()
        act = ACT_MODULES[activation]
        a = architecture(params)
        enc: list[nn.Module] = []
        for layer in a.enc_conv:
            c_out, c_in, k, _ = layer["weight"].shape
            enc += [nn.Conv2d(c_in, c_out, k, 2, k // 2 - 1), act()]
        self.split = len(enc) + 1 if a.enc_conv else 0  # where the label joins: after Flatten
        if a.enc_conv:
            enc.append(nn.Flatten())
        for layer in a.enc_dense:
            enc += [nn.Linear(layer["weight"].shape[1], layer["weight"].shape[0]), act()]
        dec: list[nn.Module] = []
        for layer in a.dec_dense:
            dec += [nn.Linear(layer["weight"].shape[1], layer["weight"].shape[0]), act()]
        if a.dec_conv:
            dec.append(nn.Unflatten(1, a.feature_shape))
            for layer in a.dec_conv:
                c_in, c_out, k, _ = layer["weight"].shape
                dec += [nn.ConvTranspose2d(c_in, c_out, k, 2, k // 2 - 1), act()]
        self.encoder, self.decoder = nn.Sequential(*enc[:-1]), nn.Sequential(*dec[:-1])
        self.to(next(iter(params.values())).dtype)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """mu, logvar: x (b, *input_shape), y one-hot (b, n) or None."""
        h = self.encoder[: self.split](x) if self.split else x.flatten(1)
        if y is not None:
            h = torch.cat([h, y], dim=-1)
        mu, logvar = self.encoder[self.split :](h).chunk(2, dim=-1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None):
        """(b, d) or (b, c, h, w)."""
        return self.decoder(z if y is None else torch.cat([z, y], dim=-1))

    def forward(self, x, eps, y=None):
        """Batched single-sample Bernoulli ELBO, written without vmap: (b,)."""
        mu, logvar = self.encode(x, y)
        logits = self.decode(mu + torch.exp(0.5 * logvar) * eps, y)
        bce = nn.functional.binary_cross_entropy_with_logits(logits.flatten(1), x.flatten(1), reduction="none")
        return -bce.sum(-1) - 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1)


def loaded(params: dict[str, torch.Tensor], activation: str = "relu") -> EquivalentVAE:
    """An EquivalentVAE holding params (strict load: the keys and shapes must agree)."""
    vae = EquivalentVAE(params, activation)
    vae.load_state_dict(params, strict=True)
    return vae
