"""One rank of the tests in test_distributed.py, launched as torchrun would launch it.

Usage: RANK=.. WORLD_SIZE=.. MASTER_ADDR=.. MASTER_PORT=.. python tests/distributed_worker.py MODE OUT_DIR
MODE "train": train (float64 eager, then float32 compiled when COMPILE=1) and
save the params; MODE "die": rank 1 exits after one epoch while rank 0 goes on;
MODE "stall": rank 1 stops taking part after one epoch but stays alive.
"""

from __future__ import annotations

import os
import sys
import time
import traceback

import torch
from safetensors.torch import save_file

import vaefunc
import vaefunc.distributed

CONFIG = dict(epochs=2, batch_size=16, lr=3e-3, beta=1.0, seed=7, progress=False)
SHAPE, LATENT, HIDDEN, N = (64,), 4, (32,), 96


def data(dtype: torch.dtype) -> torch.Tensor:
    return torch.rand(N, *SHAPE, generator=torch.Generator().manual_seed(11), dtype=dtype)


def params(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return vaefunc.VAE(SHAPE, latent_dim=LATENT, hidden=HIDDEN).init(3, dtype=dtype)


def main(mode: str, out: str) -> None:
    ctx = vaefunc.distributed.join(timeout=float(os.environ.get("TEST_TIMEOUT", "20")))
    if mode == "train":
        seen = []
        result = vaefunc.train(params(torch.float64), data(torch.float64), compile=False, distributed=True,
                               on_epoch=lambda entry, state: seen.append(entry), **CONFIG)
        save_file(result.params, os.path.join(out, f"float64_rank{ctx.rank}.safetensors"))
        # Only rank 1 asks to stop, after its 3rd step: both ranks must stop there together.
        calls = []
        stop = (lambda: calls.append(1) or len(calls) >= 3) if ctx.rank == 1 else (lambda: False)
        stopped = vaefunc.train(params(torch.float64), data(torch.float64), compile=False, distributed=True,
                                should_stop=stop, **CONFIG)
        with open(os.path.join(out, f"on_epoch_rank{ctx.rank}.txt"), "w") as f:
            f.write(f"{len(seen)} {result.history[-1]['loss']!r} {stopped.interrupted} {stopped.state.step}\n")
        if os.environ.get("COMPILE") == "1":
            result = vaefunc.train(params(torch.float32), data(torch.float32), compile=True, distributed=True,
                                   autocast=None, **CONFIG)  # float32, as the eager single-process run it equals
            save_file(result.params, os.path.join(out, f"float32_rank{ctx.rank}.safetensors"))
    elif mode in ("die", "stall"):
        if ctx.rank == 1:
            vaefunc.train(params(torch.float64), data(torch.float64), compile=False, distributed=True,
                          **(CONFIG | {"epochs": 1}))
            if mode == "stall":  # alive but silent, as a hung process or an unreachable node is
                time.sleep(120)
            os._exit(3)  # dies without a goodbye, as a crashed or killed process would
        try:
            vaefunc.train(params(torch.float64), data(torch.float64), compile=False, distributed=True,
                          **(CONFIG | {"epochs": 50}))
        except vaefunc.distributed.DistributedError:
            traceback.print_exc()
            sys.exit(17)
        sys.exit(0)  # finished: the failure was not noticed


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
