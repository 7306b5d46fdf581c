"""Test-set -ELBO after 10 epochs: vaefunc.train against an eager nn.Module VAE trained the same way.

Both are 784-400-20 with ReLU, Adam(lr=1e-3), batch 128, 10 epochs on the 4,000
mnist5k training digits (the last partial batch dropped); the test -ELBO is the
mean over 10 fixed draws of eps on the 1,000 test digits, in nats.

    python benchmarks/reference_elbo.py
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

import vaefunc
from vaefunc.data import load


class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(784, 400), nn.ReLU(), nn.Linear(400, 40))
        self.decoder = nn.Sequential(nn.Linear(20, 400), nn.ReLU(), nn.Linear(400, 784))

    def forward(self, x):
        mu, logvar = self.encoder(x).chunk(2, -1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return self.decoder(z), mu, logvar


def test_nelbo(params, x_test, reps=10):
    gen = torch.Generator().manual_seed(123)
    vals = [-vaefunc.elbo(params, x_test, torch.randn(len(x_test), 20, generator=gen)).mean() for _ in range(reps)]
    return torch.stack(vals).mean().item()


def reference(x_train, seed):
    torch.manual_seed(seed)
    model = VAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x_train), batch_size=128, shuffle=True, drop_last=True
    )
    for _ in range(10):
        for (xb,) in loader:
            logits, mu, logvar = model(xb)
            rec = F.binary_cross_entropy_with_logits(logits, xb, reduction="none").sum(-1)
            loss = (rec + vaefunc.kl_normal(mu, logvar)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {k: v.detach() for k, v in model.state_dict().items()}


def main():
    x_train = load("mnist5k").images.flatten(1)
    x_test = load("mnist5k", split="test").images.flatten(1)
    for seed in (0, 1, 2):
        params = vaefunc.init((784,), latent_dim=20, hidden=(400,), seed=seed)
        result = vaefunc.train(params, x_train, epochs=10, seed=seed, progress=False)
        print(f"seed {seed}: vaefunc {test_nelbo(result.params, x_test):.2f}   "
              f"nn.Module {test_nelbo(reference(x_train, seed), x_test):.2f}  (test -ELBO, nats)", flush=True)


if __name__ == "__main__":
    main()
