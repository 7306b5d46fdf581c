"""Your own networks at the built-in ones' speed, and the conv model against a plain PyTorch conv VAE.

Two cases, each timed in alternating rounds in one process so that the
numbers are ratios:

- ``custom``: training steps through ``vaefunc.train``'s runner (what an
  epoch runs) on the built-in MLP (784-400-20) and on ``VAE.custom`` with
  ``nn.Sequential`` modules computing the same function (same params), eager
  and compiled (float32). Goal: within 10%.
- ``conv32``: training steps of the built-in conv VAE on 32x32x3 data
  (``VAE((3, 32, 32), arch="conv")``: three stride-2 convolutions 32-32-64,
  a 400-wide dense layer, 20 latents, Gaussian likelihood) through
  ``vaefunc.train``'s step, eager and compiled, against the same network
  written as a plain ``nn.Module`` (``nn.Conv2d``/``nn.ConvTranspose2d``,
  ``torch.randn_like`` noise, ``loss.backward()``, ``torch.optim.Adam``,
  ``loss.item()`` each step as the canonical loop reads it), float32; and,
  on a CPU with bf16 matrix units, the compiled step with bf16 matmuls and
  convolutions (``autocast="bf16"``, what ``compile=True`` runs by default
  there). Goal: compiled at least 1.3x the plain loop.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import vaefunc
import vaefunc.accel
from vaefunc.training import setup

from .cases import Sizes, quality, sync


def _mlp_twin(d: int, hidden: int, latent: int) -> vaefunc.VAE:
    enc = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent))
    dec = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, d))
    return vaefunc.VAE.custom(encoder=enc, decoder=dec, input_shape=(d,), latent_dim=latent)


def custom_rows(x: torch.Tensor, *, sizes: Sizes, device: torch.device, batch: int = 128, rounds: int = 7
                ) -> list[dict]:  # fmt: skip
    """Steps of the built-in MLP and its custom twin through ``vaefunc.train``'s runner (what an epoch runs,
    the epoch's draws aside), eager (and compiled, float32), in alternating rounds; the median step time of
    each, and the custom one's rate as a share of the built-in one's."""
    hidden, d = 400 if 400 in sizes.hiddens else sizes.hiddens[0], x.shape[1]
    models = {"built-in": vaefunc.VAE((d,), latent_dim=sizes.latent, hidden=(hidden,)),
              "custom": _mlp_twin(d, hidden, sizes.latent)}  # fmt: skip
    params = models["built-in"].init(seed=0, device=device)
    steps = max(4, sizes.examples_per_round // batch // 2)
    rows = []
    for compiled in (False, True) if sizes.compile else (False,):
        torch._dynamo.reset()
        impls = {}
        for name, model in models.items():
            config = vaefunc.TrainConfig(batch_size=batch, compile=compiled, autocast=None, progress=False,
                                         device=str(device))  # fmt: skip
            impls[name] = _vaefunc_round(setup(params, x, model=model, config=config), steps)
        times, losses = _alternate(impls, steps, rounds, device)
        base = statistics.median(times["built-in"])
        for name in models:
            t = statistics.median(times[name])
            rows.append({"case": "custom", "impl": f"vaefunc-{'compiled' if compiled else 'eager'}", "model": name,
                         "hidden": hidden, "batch": batch, "seconds_per_step": t, "examples_per_s": batch / t,
                         "vs_built_in": base / t, **quality(losses[name])})  # fmt: skip
    return rows


def _alternate(impls: dict, steps: int, rounds: int, device: torch.device) -> tuple[dict, dict]:
    """Each implementation's round once (warm-up, the compile), then ``rounds`` times in turn: the seconds
    per step of each round, and the losses of every round."""
    times: dict[str, list[float]] = {name: [] for name in impls}
    losses: dict[str, list[float]] = {name: [] for name in impls}
    for name, fn in impls.items():
        losses[name] += fn()
    for _ in range(rounds):
        for name, fn in impls.items():
            t0 = time.perf_counter()
            losses[name] += fn()
            sync(device)
            times[name].append((time.perf_counter() - t0) / steps)
    return times, losses


class PlainConvVAE(nn.Module):
    """vaefunc's conv layout as a plain module: 3x32x32 -> conv 32, 32, 64 (k4 s2 p1) -> 400 -> (20, 20);
    20 -> 400 -> 64x4x4 -> transposed convs back to 3x32x32 (the Gaussian likelihood's mean)."""

    def __init__(self, channels=(32, 32, 64), hidden: int = 400, latent: int = 20):
        super().__init__()
        c_in = (3, *channels[:-1])
        self.enc = nn.ModuleList(nn.Conv2d(a, b, 4, 2, 1) for a, b in zip(c_in, channels))
        self.fc1 = nn.Linear(channels[-1] * 16, hidden)
        self.head = nn.Linear(hidden, 2 * latent)
        self.fc3 = nn.Linear(latent, hidden)
        self.fc4 = nn.Linear(hidden, channels[-1] * 16)
        c_out = (*channels[::-1][1:], 3)
        self.dec = nn.ModuleList(nn.ConvTranspose2d(a, b, 4, 2, 1) for a, b in zip(channels[::-1], c_out))
        self.top = channels[-1]

    def forward(self, x):
        h = x
        for conv in self.enc:
            h = F.relu(conv(h))
        mu, logvar = self.head(F.relu(self.fc1(h.flatten(1)))).chunk(2, dim=-1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        h = F.relu(self.fc4(F.relu(self.fc3(z)))).view(-1, self.top, 4, 4)
        for i, conv in enumerate(self.dec):
            h = conv(h) if i == len(self.dec) - 1 else F.relu(conv(h))
        return h, mu, logvar


def _plain_loss(out, x, mu, logvar):
    """The Gaussian (sd 1) negative log-likelihood plus the closed-form KL, summed over features, batch mean."""
    rec = 0.5 * (out - x).square().flatten(1).sum(-1) + 0.5 * x[0].numel() * 1.8378770664093453
    kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(-1)
    return (rec + kl).mean()


def conv32_rows(*, sizes: Sizes, device: torch.device, batch: int = 64, rounds: int = 7) -> list[dict]:
    """Steps per second of the built-in conv VAE through train's runner (eager, compiled) against the
    plain module with autograd and torch.optim.Adam, on the same 32x32x3 data, in alternating rounds."""
    gen = torch.Generator().manual_seed(0)
    n = max(batch * 8, min(sizes.n, 2048))
    x = torch.rand(n, 3, 32, 32, generator=gen).to(device)
    model = vaefunc.VAE((3, 32, 32), latent_dim=20, hidden=(400,), arch="conv", channels=(32, 32, 64),
                        likelihood="gaussian")  # fmt: skip
    steps = max(4, sizes.examples_per_round // batch // 4)
    impls = {"reference-plain": _plain_round(x, batch, steps, device)}
    variants = [("vaefunc-eager", False, None)]
    if sizes.compile:
        variants.append(("vaefunc-compiled", True, None))
        if vaefunc.accel.bf16_matmul_units(device):  # what train(compile=True) runs by default on this machine
            variants.append(("vaefunc-compiled-bf16", True, "bf16"))
    for name, compiled, autocast in variants:
        torch._dynamo.reset()
        config = vaefunc.TrainConfig(batch_size=batch, compile=compiled, autocast=autocast, progress=False,
                                     device=str(device))  # fmt: skip
        run = setup(model.init(seed=0, device=device), x, model=model, config=config)
        impls[name] = _vaefunc_round(run, steps)
    times, losses = _alternate(impls, steps, rounds, device)
    ref = statistics.median(times["reference-plain"])
    return [{"case": "conv32", "impl": name, "batch": batch, "input_shape": [3, 32, 32],
             "seconds_per_step": statistics.median(t), "examples_per_s": batch / statistics.median(t),
             "vs_reference": ref / statistics.median(t), **quality(losses[name])}
            for name, t in times.items()]  # fmt: skip


def _plain_round(x: torch.Tensor, batch: int, steps: int, device: torch.device):
    torch.manual_seed(0)
    module = PlainConvVAE().to(device)
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)

    def round_():
        out = []
        for i in range(steps):
            xb = x[(i * batch) % (x.shape[0] - batch + 1):][:batch]
            opt.zero_grad()
            recon, mu, logvar = module(xb)
            loss = _plain_loss(recon, xb, mu, logvar)
            loss.backward()
            opt.step()
            out.append(loss.item())  # the canonical loop reads the loss every step
        return out

    return round_


def _vaefunc_round(run, steps: int):
    draws = run.feed.draw(0)

    def round_():
        losses = [run.runner.advance(run.feed.batch(draws, i % run.feed.steps))["loss"] for i in range(steps)]
        return [float(v) for v in losses]  # one sync per round, after the steps

    return round_
