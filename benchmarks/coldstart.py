"""One measurement in a fresh interpreter: the cold start, or a default run end to end.

Run by :func:`benchmarks.cases.subprocess_case` with its own
``TORCHINDUCTOR_CACHE_DIR``; prints one JSON row on its last line. ``seconds``
counts from before ``import torch`` to the first finished step (``first-step-*``)
or to the end of training (``train-*``), less the time spent loading the digits
(``data_seconds``, the same for vaefunc and the reference).

    python -m benchmarks.coldstart first-step-compiled --device cpu
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402

MODES = ("first-step-eager", "first-step-compiled", "first-step-reference", "train-default", "train-reference")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.coldstart")
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--d", type=int, default=784)
    parser.add_argument("--latent", type=int, default=20)
    args = parser.parse_args(argv)

    import torch

    import vaefunc
    from vaefunc.training import setup

    from . import reference
    from .cases import load_data, quality, sync

    device = torch.device(args.device)
    t_data = time.perf_counter()
    x, source = load_data(args.n, args.d, device=device)
    sync(device)
    t_data = time.perf_counter() - t_data  # parsing the digits is the same for everyone: not counted
    row: dict = {"case": "subprocess", "mode": args.mode, "n": args.n, "data": source, "data_seconds": t_data}
    batch = 128
    t_step = None  # the first step alone, after import and set-up: what JAX's first jitted epoch is set against
    if args.mode == "first-step-reference":
        model, opt = reference.make_reference(args.d, 400, args.latent, seed=0, device=device)
        loader = reference.make_loader(x, batch, seed=0)
        (data,) = next(iter(loader))
        losses = [reference.train_step(model, opt, data.to(device)) / batch]
    elif args.mode.startswith("first-step"):
        model = vaefunc.VAE((args.d,), latent_dim=args.latent, hidden=(400,))
        # The step train runs, on state it owns (vaefunc.training.setup builds it as train does).
        config = vaefunc.TrainConfig(batch_size=batch, compile=args.mode == "first-step-compiled", progress=False)
        run = setup(model.init(seed=0, device=device), x, model=model, config=config)
        batch_0 = run.feed.batch(run.feed.draw(0), 0)
        t_step = time.perf_counter()
        losses = [float(run.runner.advance(batch_0)["loss"])]
        t_step = time.perf_counter() - t_step
    elif args.mode == "train-default":
        from vaefunc.training import should_compile

        params = vaefunc.init((args.d,), latent_dim=args.latent, hidden=(400,), seed=0, device=device)
        steps = (args.n // batch) * args.epochs
        row["compiled"] = should_compile("auto", device, params, batch, steps)
        result = vaefunc.train(params, x, epochs=args.epochs, progress=False)
        losses = [h["loss"] for h in result.history]
    else:
        losses = reference.train(x.cpu(), epochs=args.epochs, latent=args.latent, device=device)["loss"]
    sync(device)
    row["seconds"] = time.perf_counter() - T0 - t_data
    row["step_seconds"] = t_step
    row["epochs"] = args.epochs if args.mode.startswith("train") else None
    row |= quality(losses) if len(losses) > 1 else {"loss_last": losses[-1], "quality_ok": math.isfinite(losses[-1])}
    print(json.dumps(row))
    return row


if __name__ == "__main__":
    main()
