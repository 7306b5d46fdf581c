"""Does writing the ELBO per example and batching it with vmap cost anything?

Times one training step (784-400-20, batch 128, Adam) with the library's
vmapped per-example ELBO against the same loss written directly on (b, d)
tensors, eager or compiled; run each in its own process on a quiet machine:

    for w in vmap batched; do for c in 0 1; do python benchmarks/vmap_cost.py $w $c; done; done
"""
import time, sys, torch, torch.nn.functional as F
import vaefunc
from vaefunc.losses import make_loss
from vaefunc.step import make_step
from vaefunc.model import encode, decode, reparameterize
def batched_loss(params, x, eps, beta, capacity):
    mu, logvar = encode(params, x)
    logits = decode(params, reparameterize(mu, logvar, eps))
    rec = (x * logits - F.softplus(logits)).sum(-1).mean()
    kl = vaefunc.kl_normal(mu, logvar).mean()
    return beta * kl - rec, {"recon": rec, "kl": kl, "elbo": rec - kl}
which, comp = sys.argv[1], sys.argv[2] == "1"
p = vaefunc.init((784,), latent_dim=20, hidden=(400,), seed=0); opt = vaefunc.adam(1e-3); s = opt.init(p)
x = torch.rand(128, 784); eps = torch.randn(128, 20); beta = torch.tensor(1.0); cap = torch.tensor(0.0)
lf = make_loss(objective="elbo", k=1, likelihood="bernoulli", obs_std=1.0, kl_schedule=None) if which == "vmap" else batched_loss
step = make_step(lf, opt)
if comp: step = torch.compile(step, fullgraph=True)
for _ in range(5): p, s, _ = step(p, s, x, eps, beta, cap)
ts = []
for _ in range(7):
    t = time.perf_counter()
    for _ in range(50): p, s, m = step(p, s, x, eps, beta, cap)
    ts.append((time.perf_counter() - t) / 50)
ts.sort(); print(f"{which:8s} {'compiled' if comp else 'eager':8s} {ts[3]*1e3:.2f} ms/step (median of 7x50 steps)", flush=True)
