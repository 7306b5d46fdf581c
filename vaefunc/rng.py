"""Named random streams for the training loop, derived from one seed.

Library functions never draw random numbers; ``train`` owns these generators,
draws noise on the device outside the compiled step, and saves their states so
a resumed run continues bit for bit.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

STREAMS = ("data", "noise", "binarize")


class Streams(NamedTuple):
    data: torch.Generator  # the epoch's shuffle
    noise: torch.Generator  # eps of the reparameterization
    binarize: torch.Generator  # dynamic binarization of the inputs


def make_streams(seed: int, device: torch.device | str = "cpu") -> Streams:
    """Independent generators on ``device`` for each stream, from one seed.

    The seeds come from ``numpy.random.SeedSequence(seed)``, so streams of
    nearby seeds are unrelated (seed 0's noise is not seed 1's shuffle).
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    gens = []
    for child in children:
        g = torch.Generator(device=device)
        g.manual_seed(int(child.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)))
        gens.append(g)
    return Streams(*gens)


def get_states(streams: Streams) -> dict[str, torch.Tensor]:
    """The generators' states as uint8 CPU tensors, by stream name."""
    return {name: g.get_state() for name, g in zip(STREAMS, streams)}


def set_states(streams: Streams, states: dict[str, torch.Tensor]) -> None:
    """Restore states saved by :func:`get_states` (this mutates the generators)."""
    for name, g in zip(STREAMS, streams):
        state = states[name]
        if not isinstance(state, torch.Tensor) or state.dtype != torch.uint8 or state.shape != g.get_state().shape:
            got = f"{state.dtype} {tuple(state.shape)}" if isinstance(state, torch.Tensor) else type(state).__name__
            raise ValueError(f"the {name!r} generator state must be a uint8 tensor {tuple(g.get_state().shape)} "
                             f"of this device's generator; got {got}")  # fmt: skip
        # A copy of its own: set_state reads the storage from its start, whatever the view's offset.
        g.set_state(state.detach().to("cpu", copy=True).contiguous())
