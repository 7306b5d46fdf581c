"""M2 (Kingma et al. 2014) and augmentation."""

from __future__ import annotations

import math

import pytest
import torch

import vaefunc

F64 = torch.float64
N = 3
SSL = vaefunc.VAE((12,), latent_dim=2, hidden=(6,), n_classes=N, semi_supervised=True)
COND = vaefunc.VAE((12,), latent_dim=2, hidden=(6,), n_classes=N)


def _batch(b=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, eps = torch.rand(b, 12, generator=g, dtype=F64), torch.randn(b, 2, generator=g, dtype=F64)
    y = torch.zeros(b, N, dtype=F64)
    y[0, 1] = y[2, 0] = y[3, 2] = 1.0  # examples 1, 4, 5 are unlabelled
    return x, eps, y


def test_the_marginalised_elbo_is_the_explicit_sum_over_classes():
    """The batched pass over classes equals a loop over them: -ELBO(x, y) for a labelled example,
    -sum_y q(y|x) ELBO(x, y) - H(q(y|x)) for an unlabelled one (alpha = 0)."""
    params = SSL.init(seed=0, dtype=F64)
    x, eps, y = _batch()
    beta = torch.tensor(0.7, dtype=F64)
    loss, metrics_ = SSL.loss(alpha=0.0)(params, x, eps, beta, torch.tensor(0.0, dtype=F64), y)
    logq = SSL.classify(params, x)
    per_class = []
    for c in range(N):
        rec, kl = SSL.elbo_terms(params, x, eps, torch.full((6,), c))
        per_class.append(rec - beta * kl - math.log(N))  # log p(y) of the uniform prior
    bounds = torch.stack(per_class, -1)  # (b, n)
    labelled = y.sum(-1) > 0
    want = torch.where(labelled, (y * bounds).sum(-1),
                       (logq.exp() * bounds).sum(-1) - (logq.exp() * logq).sum(-1))  # fmt: skip
    torch.testing.assert_close(loss, -want.mean(), rtol=1e-12, atol=1e-12)
    assert set(metrics_) == {"recon", "kl", "elbo", "accuracy"}


def test_the_classification_term_is_alpha_times_the_labelled_cross_entropy():
    params = SSL.init(seed=1, dtype=F64)
    x, eps, y = _batch(seed=1)
    one, zero = torch.tensor(1.0, dtype=F64), torch.tensor(0.0, dtype=F64)
    a, _ = SSL.loss(alpha=0.0)(params, x, eps, one, zero, y)
    b, _ = SSL.loss(alpha=2.5)(params, x, eps, one, zero, y)
    ce = -(y * SSL.classify(params, x)).sum(-1).mean()  # the mean over the batch, unlabelled rows 0
    torch.testing.assert_close(b - a, 2.5 * ce, rtol=1e-12, atol=1e-12)


def test_alpha_zero_with_every_label_is_a_conditional_vae_plus_nothing():
    """All labels given, alpha = 0: the loss is the conditional VAE's plus the constant log n_classes,
    its encoder and decoder gradients are the conditional VAE's, and the classifier gets none."""
    params = SSL.init(seed=2, dtype=F64)
    g = torch.Generator().manual_seed(3)
    x, eps = torch.rand(6, 12, generator=g, dtype=F64), torch.randn(6, 2, generator=g, dtype=F64)
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    y = torch.nn.functional.one_hot(labels, N).to(F64)
    one, zero = torch.tensor(1.0, dtype=F64), torch.tensor(0.0, dtype=F64)
    ssl = lambda p: SSL.loss(alpha=0.0)(p, x, eps, one, zero, y)[0]  # noqa: E731
    vae = {k: v for k, v in params.items() if not k.startswith("classifier.")}
    cond = lambda p: COND.loss()(p, x, eps, one, zero, y)[0]  # noqa: E731
    torch.testing.assert_close(ssl(params), cond(vae) + math.log(N), rtol=1e-12, atol=1e-12)
    g_ssl, g_cond = torch.func.grad(ssl)(params), torch.func.grad(cond)(vae)
    for k in vae:
        torch.testing.assert_close(g_ssl[k], g_cond[k], rtol=1e-10, atol=1e-12, msg=k)
    assert all(float(g_ssl[k].abs().max()) == 0.0 for k in params if k.startswith("classifier."))


def test_training_with_every_label_and_alpha_zero_equals_the_conditional_vae():
    g = torch.Generator().manual_seed(4)
    x, labels = torch.rand(48, 12, generator=g, dtype=F64), torch.randint(0, N, (48,), generator=g)
    kw = dict(labels=labels, epochs=2, batch_size=16, progress=False, compile=False, seed=5)
    ssl = vaefunc.train(SSL.init(seed=0, dtype=F64), x, model=SSL, alpha=0.0, **kw)
    cond = vaefunc.train(COND.init(seed=0, dtype=F64), x, model=COND, **kw)
    for k in cond.params:
        torch.testing.assert_close(ssl.params[k], cond.params[k], rtol=1e-9, atol=1e-11, msg=k)


def test_classify_gives_log_probabilities_and_a_few_labels_teach_it():
    from vaefunc.data import load

    x, y = load("digits", split="train")
    x_test, y_test = load("digits", split="test")
    partial = torch.full_like(y, -1)
    keep = torch.cat([torch.nonzero(y == c).flatten()[:5] for c in range(10)])  # 50 labels
    partial[keep] = y[keep]
    model = vaefunc.VAE((1, 8, 8), latent_dim=8, hidden=(64,), n_classes=10, semi_supervised=True)
    result = vaefunc.train(model.init(seed=0), x, labels=partial, model=model, epochs=10, batch_size=64,
                           progress=False, compile=False)  # fmt: skip
    logq = model.classify(result.params, x_test)
    torch.testing.assert_close(logq.exp().sum(-1), torch.ones(len(x_test)))
    accuracy = float((logq.argmax(-1) == y_test).float().mean())
    untrained = float((model.classify(model.init(seed=0), x_test).argmax(-1) == y_test).float().mean())
    assert accuracy > 0.8 > untrained, (accuracy, untrained)


def test_semi_supervised_labels_and_settings_are_checked():
    x = torch.rand(32, 12)
    params = SSL.init()
    kw = {"batch_size": 16, "progress": False}
    with pytest.raises(ValueError, match=r"\[0, 3\) \(or -1 for an unlabelled example\)"):
        vaefunc.train(params, x, labels=torch.full((32,), -2), model=SSL, **kw)
    with pytest.raises(ValueError, match="needs some labelled examples"):
        vaefunc.train(params, x, labels=torch.full((32,), -1), model=SSL, **kw)
    with pytest.raises(ValueError, match="conditional on 3 classes"):
        vaefunc.train(params, x, model=SSL, **kw)
    with pytest.raises(ValueError, match="a semi-supervised model trains on the ELBO"):
        vaefunc.train(params, x, labels=torch.zeros(32).long(), model=SSL, objective="iwae", **kw)
    with pytest.raises(ValueError, match="semi_supervised needs n_classes >= 2"):
        vaefunc.VAE((12,), semi_supervised=True)
    with pytest.raises(ValueError, match="classify needs a semi-supervised model"):
        COND.classify(COND.init(), x)
    with pytest.raises(ValueError, match="-1"):  # -1 is only for a semi-supervised model
        vaefunc.train(COND.init(), x, labels=torch.full((32,), -1), model=COND, **kw)


def test_the_spec_round_trips_and_a_checkpoint_keeps_the_classifier(tmp_path):
    params = SSL.init(seed=3)
    assert vaefunc.VAE.from_params(params) == SSL
    path = vaefunc.save(tmp_path / "m.safetensors", params, model=SSL)
    ckpt = vaefunc.load(path)
    assert ckpt.model == SSL and torch.equal(ckpt.params["classifier.0.weight"], params["classifier.0.weight"])


# ------------------------------------------------------------------ augmentation


def test_augment_from_the_prior_draws_the_given_classes():
    params = COND.init(seed=0)
    images, labels = vaefunc.augment(params, model=COND, labels=torch.arange(N).repeat(4), seed=7)
    assert images.shape == (12, 12) and labels.tolist() == [0, 1, 2] * 4
    torch.testing.assert_close(images, COND.sample(params, 12, seed=7, labels=labels))
    again, _ = vaefunc.augment(params, model=COND, labels=torch.arange(N).repeat(4), seed=7)
    assert torch.equal(images, again)
    with pytest.raises(ValueError, match="needs a conditional model"):
        vaefunc.augment(vaefunc.VAE((12,), latent_dim=2).init(), model=vaefunc.VAE((12,), latent_dim=2), labels=[0])


def test_augment_from_the_posterior_perturbs_codes_by_the_scale():
    params = COND.init(seed=1)
    x, labels = torch.rand(4, 12, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 0])
    same, y = vaefunc.augment(params, model=COND, x=x, labels=labels, copies=3, scale=0.0)
    mu, _ = COND.encode(params, x, labels)
    torch.testing.assert_close(same, COND.mean(params, mu, labels).repeat(3, 1))  # scale 0: reconstructions
    assert y.tolist() == labels.tolist() * 3
    spread, _ = vaefunc.augment(params, model=COND, x=x, labels=labels, copies=3, scale=1.0)
    assert not torch.allclose(spread, same)
    plain = vaefunc.VAE((12,), latent_dim=2, hidden=(6,))
    images, passed = vaefunc.augment(plain.init(), model=plain, x=x, labels=[5, 6, 7, 8], copies=2)
    assert images.shape == (8, 12) and passed.tolist() == [5, 6, 7, 8] * 2
    with pytest.raises(ValueError, match="pass the labels of x"):
        vaefunc.augment(params, model=COND, x=x)
    with pytest.raises(ValueError, match="x must lie in"):
        vaefunc.augment(params, model=COND, x=x * 3, labels=labels)


def test_keep_labels_keeps_a_balanced_seeded_subset():
    y = torch.randint(0, 10, (500,), generator=torch.Generator().manual_seed(0))
    kept = vaefunc.data.keep_labels(y, 7, seed=3)
    assert torch.equal(torch.bincount(kept[kept >= 0], minlength=10), torch.full((10,), 7))
    assert torch.equal(kept[kept >= 0], y[kept >= 0])  # the kept labels are the true ones
    assert torch.equal(kept, vaefunc.data.keep_labels(y, 7, seed=3))
    assert not torch.equal(kept, vaefunc.data.keep_labels(y, 7, seed=4))
    with pytest.raises(ValueError, match="per_class must be a positive int"):
        vaefunc.data.keep_labels(y, 0)


def test_the_spec_cache_tells_params_with_a_classifier_from_those_without():
    """The params-first functions cache specs by the params' keys and shapes: the classifier's count."""
    from vaefunc._resolve import spec_of

    params = SSL.init(seed=0)
    plain = {k: v for k, v in params.items() if not k.startswith("classifier.")}
    assert spec_of(params).semi_supervised and not spec_of(plain).semi_supervised
    assert spec_of(params).semi_supervised


def test_the_default_alpha_is_kingma_et_als_weighting():
    """alpha = 0.1 N on the mean labelled cross-entropy: per labelled example and epoch, 0.1 N / n_labelled
    against an unlabelled example's bound of weight 1; vaefunc 0.2's weight was 133x that at 100 of 50,000."""
    from vaefunc.training import labelled_repeats, paper_alpha, semi_supervised_pool, sum_alpha

    n_lab, n_unlab = 100, 49_900
    repeats = labelled_repeats(n_lab, n_unlab, 0.25)
    assert paper_alpha(n_lab, n_unlab, repeats) * repeats == pytest.approx(0.1 * 50_000 / n_lab)
    assert sum_alpha(n_lab, n_unlab, repeats) / paper_alpha(n_lab, n_unlab, repeats) == pytest.approx(133.0)
    y = torch.full((40,), -1)
    y[:4] = torch.tensor([0, 1, 2, 0])
    model = vaefunc.VAE((6,), latent_dim=2, n_classes=3, semi_supervised=True)
    one_hot = vaefunc.network.one_hot(y.clamp(min=0), 3, torch.float32) * (y >= 0)[:, None]
    _, alpha = semi_supervised_pool(one_hot, model, vaefunc.TrainConfig())
    assert alpha == pytest.approx(paper_alpha(4, 36, labelled_repeats(4, 36, 0.25)))
    _, given = semi_supervised_pool(one_hot, model, vaefunc.TrainConfig(alpha=2.5))
    assert given == 2.5
