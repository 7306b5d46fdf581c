"""``vaefunc train --log tensorboard``: a run's numbers and pictures as TensorBoard event files.

The event files (``events.out.tfevents.*``) go in the run directory itself,
so ``tensorboard --logdir runs`` lists every run by its name. After each
epoch: the scalars of its metrics.jsonl line, ``train/`` and ``test/`` loss,
elbo, recon and kl (nats per example) and ``speed/examples_per_s``, at the
epoch number; at the end, the run's pictures as images. A resumed run purges
what a killed run logged past its checkpoint. The writer is
``torch.utils.tensorboard.SummaryWriter``, which needs the ``tensorboard``
package (``pip install tensorboard``; in a vaefunc checkout, ``pip install -e ".[tensorboard]"``
as the README says).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .parser import UsageError


def summary_writer() -> type:
    """``torch.utils.tensorboard.SummaryWriter``; without the tensorboard package, a UsageError saying what to
    install (asked before any work)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError("--log tensorboard needs the tensorboard package: pip install tensorboard "
                         "(in a vaefunc checkout: pip install -e \".[tensorboard]\")") from None  # fmt: skip
    return SummaryWriter


class TensorBoard:
    """The run's TensorBoard writer: one call per epoch, one for the pictures, then close."""

    def __init__(self, writer_type: type, run: Path, *, resumed_at: int | None = None):
        # purge_step hides events a killed run wrote after the checkpoint this run resumes from
        self.writer = writer_type(log_dir=str(run), purge_step=None if resumed_at is None else resumed_at + 1)

    def epoch(self, row: dict[str, Any]) -> None:
        """A metrics.jsonl line's scalars at its epoch."""
        step = row["epoch"]
        for key, value in row.items():
            split, _, name = key.partition("_")
            if split in ("train", "test"):
                self.writer.add_scalar(f"{split}/{name}", value, step)
        self.writer.add_scalar("speed/examples_per_s", row["examples_per_s"], step)
        self.writer.flush()  # a sync point with the disk, once per epoch: TensorBoard shows it as it goes

    def pictures(self, run: Path, names: Iterable[str], step: int) -> None:
        """The run's PNGs (those that exist) as images named after their files, at the last epoch."""
        import numpy as np
        from PIL import Image

        for name in names:
            if (run / name).is_file():
                with Image.open(run / name) as img:
                    pixels = np.asarray(img.convert("RGB"))
                self.writer.add_image(Path(name).stem, pixels, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
