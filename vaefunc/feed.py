"""What each training step reads: the data on the device, and the epoch's draws from seeded streams.

Per epoch, all on the device and with no host work per step: shuffle with a
seeded ``torch.Generator``, take ``n // batch_size`` fixed-size batches (the
last partial batch is dropped, so a compiled step sees one shape), draw the
epoch's eps in one call, and evaluate the KL schedule for every step. A run of
one model has one set of streams (:mod:`vaefunc.rng`); an ensemble either
shares them (every member sees the batches and noise of ``train(...,
seed=seed)``: common random numbers) or gives member i the streams of
``seed[i]``, so each member sees exactly what its lone run would.

Axis letters: m ensemble members, s steps of an epoch, b batch, d data features,
k importance samples, z latent, n classes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from .rng import STREAMS, Streams, get_states, make_streams, set_states
from .runners import Batch
from .schedules import KLSchedule, schedule_values


class Draws(NamedTuple):
    """One epoch's draws: perm (s, b) or (m, s, b), eps (s, ...) or (m, s, ...), beta and capacity (s,) or (s, m)."""

    perm: Tensor
    eps: Tensor
    beta: Tensor
    capacity: Tensor


class Feed:
    """The batches of a run, from data on the device and seeded streams.

    Args:
        x: (n, d) on the device, in the params' dtype.
        y: (n, n_classes) one-hot labels on the device, or None.
        seeds: one seed (one model, or an ensemble's shared streams) or m seeds.
        members: m for an ensemble, None for one model.
        steps: the steps of an epoch (:func:`vaefunc.plan.plan`: the rows it shuffles // batch_size).
        eps_shape: one step's noise: (b, z), or (k, b, z) for the IWAE objective.
        schedule: the KL term; with ``member_beta`` (m,) the constant beta of each member.
    """

    def __init__(self, x: Tensor, y: Tensor | None, *, seeds: list[int], members: int | None, batch_size: int,
                 steps: int, eps_shape: tuple[int, ...], schedule: KLSchedule, binarize: str | None,
                 member_beta: Tensor | None = None, pool: Tensor | None = None):  # fmt: skip
        self.x, self.y, self.members, self.binarize = x, y, members, binarize
        self.batch_size, self.eps_shape, self.schedule, self.member_beta = batch_size, eps_shape, schedule, member_beta
        self.pool = pool  # the rows an epoch shuffles, when not each row once (a semi-supervised run's repeats)
        self.steps = steps
        self.streams: list[Streams] = [make_streams(s, x.device) for s in seeds]
        self.shared = len(self.streams) == 1

    def draw(self, epoch: int) -> Draws:
        """The epoch's shuffles, noise and schedule values, drawn on the device in a few calls."""
        n, s, b, dev, dtype = self.x.shape[0], self.steps, self.batch_size, self.x.device, self.x.dtype
        n = n if self.pool is None else self.pool.numel()
        perms = [torch.randperm(n, generator=g.data, device=dev)[: s * b].view(s, b) for g in self.streams]
        if self.pool is not None:
            perms = [self.pool[p] for p in perms]
        eps = [torch.randn((s, *self.eps_shape), generator=g.noise, device=dev, dtype=dtype) for g in self.streams]
        steps = torch.arange(epoch * s, (epoch + 1) * s, device=dev)
        beta, capacity = (v.to(dtype) for v in schedule_values(self.schedule, steps))
        if self.members is not None:  # (s, m): one value per member and step
            scale = self.member_beta if self.member_beta is not None else torch.ones(self.members, dtype=dtype,
                                                                                      device=dev)  # fmt: skip
            beta, capacity = beta[:, None] * scale, capacity[:, None].expand(s, self.members)
        if self.shared:
            return Draws(perms[0], eps[0], beta, capacity)
        return Draws(torch.stack(perms), torch.stack(eps), beta, capacity)

    def batch(self, draws: Draws, i: int) -> Batch:
        """Step i's batch; on-the-fly binarization draws from the binarize stream(s) here."""
        idx = draws.perm[..., i, :]
        x = self.x.index_select(0, idx) if idx.ndim == 1 else self.x[idx]  # a plain row gather when shared
        if self.binarize == "dynamic":
            x = self._binarized(x)
        y = None if self.y is None else self.y[idx]
        eps = draws.eps[i] if self.shared else draws.eps[:, i]
        return Batch(x, eps, draws.beta[i], draws.capacity[i], y)

    def _binarized(self, x: Tensor) -> Tensor:
        if self.shared:
            return torch.bernoulli(x, generator=self.streams[0].binarize)
        return torch.stack([torch.bernoulli(x[j], generator=g.binarize) for j, g in enumerate(self.streams)])

    def skip(self, draws: Draws, steps: int) -> None:
        """Advance the binarize streams past ``steps`` batches already trained (a resumed epoch)."""
        if self.binarize == "dynamic":
            for _ in range(steps):
                self._binarized(self.x[draws.perm[..., 0, :]])

    def rng_state(self) -> dict[str, Tensor]:
        """Every stream's generator state by name: (L,) uint8, or (m, L) for an ensemble's own streams."""
        states = [get_states(g) for g in self.streams]
        if self.shared:
            return states[0]
        return {name: torch.stack([s[name] for s in states]) for name in STREAMS}

    def set_rng_state(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`rng_state` (a resumed run)."""
        if self.shared:
            set_states(self.streams[0], state)
            return
        for j, g in enumerate(self.streams):
            set_states(g, {name: state[name][j] for name in STREAMS})

    def binarize_state(self) -> list[Tensor]:
        """The binarize generators' states, to replay the steps after a sync point."""
        return [g.binarize.get_state() for g in self.streams]

    def set_binarize_state(self, states: list[Tensor]) -> None:
        for g, state in zip(self.streams, states):
            g.binarize.set_state(state)

    def template(self) -> Batch:
        """A batch of zeros with the shapes every step's batch has (a CUDA graph is captured on it)."""
        lead = [] if self.shared else [len(self.streams)]
        per_step = [] if self.members is None else [self.members]
        kw: dict[str, Any] = {"dtype": self.x.dtype, "device": self.x.device}
        draws = Draws(torch.zeros(*lead, 1, self.batch_size, dtype=torch.int64, device=self.x.device),
                      torch.zeros(*lead, 1, *self.eps_shape, **kw), torch.zeros(1, *per_step, **kw),
                      torch.zeros(1, *per_step, **kw))  # fmt: skip
        mode, self.binarize = self.binarize, None  # no draw from the binarize streams
        try:
            return self.batch(draws, 0)
        finally:
            self.binarize = mode
