"""Gradient accumulation: micro-batch losses normalised by the step's valid count add up to
the full-batch loss, in value and gradient, on every autodiff backend.

The recipe under test (documented in docs/distributed.md): ``n = valid_count(step_mask)``
once per optimiser step, then ``masked_mse(..., normalizer=n)`` for each micro-batch, and the
micro-batch losses (or their gradients) are summed.
"""

from __future__ import annotations

import numpy as np
import pytest

import masked_losses as ml
from tests.conftest import require

N, D_IN, D_OUT = 22, 5, 3
# four micro-batches of unequal size; the second has no valid entry at all
SPLITS = ((0, 7), (7, 10), (10, 19), (19, 22))


def make_data(seed, *, weighted=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D_IN)).astype(np.float32)
    w_true = rng.normal(size=(D_IN, D_OUT)).astype(np.float32)
    y = (x @ w_true + rng.normal(0, 0.1, size=(N, D_OUT))).astype(np.float32)
    mask = rng.random((N, D_OUT)) < 0.5
    mask[SPLITS[1][0] : SPLITS[1][1]] = False
    mask[SPLITS[0][0] : SPLITS[0][1], 0] = True  # micro-batch 0 is rich in task 0 ...
    mask[SPLITS[2][0] : SPLITS[2][1], 0] = False
    mask[SPLITS[2][0], 0] = True  # ... micro-batch 2 has a single valid entry of task 0
    y = np.where(mask, y, np.nan).astype(np.float32)  # missing targets stored as NaN
    weights = None
    if weighted:
        weights = rng.uniform(0.1, 2.0, size=(N, D_OUT)).astype(np.float32)
    params = rng.normal(size=(D_IN, D_OUT)).astype(np.float32)
    return params, x, y, mask, weights


def full_batch_loss(params, x, y, mask, *weights, axis=None):
    w = weights[0] if weights else None
    return ml.masked_mse(x @ params, y, mask, weights=w, axis=axis)


def accumulated_loss(params, x, y, mask, *weights, axis=None):
    """Sum over micro-batches, each normalised by the count of the whole step."""
    w = weights[0] if weights else None
    n = ml.valid_count(mask, weights=w, axis=0 if axis == 0 else None)
    total = 0.0
    for a, b in SPLITS:
        total = total + ml.masked_mse(
            x[a:b] @ params, y[a:b], mask[a:b],
            weights=None if w is None else w[a:b], axis=axis, normalizer=n,
        )
    return total


def mean_of_micro_batch_means(params, x, y, mask):
    """The biased recipe: each micro-batch averaged over its own valid count."""
    return sum(ml.masked_mse(x[a:b] @ params, y[a:b], mask[a:b]) for a, b in SPLITS) / len(SPLITS)


def oracle_loss(params, x, y, mask, weights=None, axis=None):
    """float64 NumPy on the valid subset."""
    pred = x.astype(np.float64) @ params.astype(np.float64)
    w = np.ones(pred.shape) if weights is None else weights.astype(np.float64)
    terms = np.where(mask, (pred - np.where(mask, y, 0.0)) ** 2, 0.0) * w
    if axis == 0:
        return terms.sum(0) / np.where(mask, w, 0.0).sum(0)
    return terms.sum() / np.where(mask, w, 0.0).sum()


@pytest.mark.parametrize(
    ("weighted", "axis"), [(False, None), (True, None), (False, 0)],
    ids=["count", "weighted", "per-task"],
)
def test_accumulation_equals_full_batch(ad, weighted, axis):
    params, x, y, mask, weights = make_data(0, weighted=weighted)
    arrays = [ad.asarray(a) for a in (params, x, y, mask)]
    if weights is not None:
        arrays.append(ad.asarray(weights))
    argnums = (0, 1)  # the gradient w.r.t. the parameters and w.r.t. the inputs
    full = ad.value_and_grad(full_batch_loss, *arrays, argnums=argnums, axis=axis)
    accumulated = ad.value_and_grad(accumulated_loss, *arrays, argnums=argnums, axis=axis)
    expected = oracle_loss(params, x, y, mask, weights, axis=axis)
    np.testing.assert_allclose(full[0], np.sum(expected), rtol=1e-5)
    for a, b in zip(accumulated, full, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(accumulated[1]))


def test_mean_of_micro_batch_means_is_biased(ad):
    """The test data make the naive recipe visibly wrong, so the test above can fail."""
    params, x, y, mask, _ = make_data(0)
    arrays = [ad.asarray(a) for a in (params, x, y, mask)]
    naive = ad.value_and_grad(mean_of_micro_batch_means, *arrays, argnums=(0,))
    full = ad.value_and_grad(full_batch_loss, *arrays, argnums=(0,))
    assert abs(float(naive[0]) - float(full[0])) > 1e-2 * abs(float(full[0]))
    assert np.max(np.abs(naive[1] - full[1])) > 1e-2 * np.max(np.abs(full[1]))


def test_torch_backward_per_micro_batch_then_step():
    """The real PyTorch loop: backward() per micro-batch accumulates .grad, one step()."""
    torch = require("torch")
    from masked_losses.torch import MaskedMSELoss

    _, x, y, mask, _ = make_data(1)
    x, y, mask = (torch.from_numpy(a) for a in (x, y, mask))
    loss_fn = MaskedMSELoss()

    def model_and_opt():
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(D_IN, 8), torch.nn.Tanh(), torch.nn.Linear(8, D_OUT)
        )
        return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    ref, ref_opt = model_and_opt()
    acc, acc_opt = model_and_opt()
    for _ in range(3):  # three optimiser steps on the same step data
        ref_opt.zero_grad()
        ref_loss = loss_fn(ref(x), y, mask)
        ref_loss.backward()
        ref_opt.step()

        acc_opt.zero_grad()
        n = ml.valid_count(mask)  # the count of the whole optimiser step
        acc_loss = 0.0
        for a, b in SPLITS:
            micro = loss_fn(acc(x[a:b]), y[a:b], mask[a:b], normalizer=n)
            micro.backward()
            acc_loss += micro.item()
        acc_opt.step()
        assert acc_loss == pytest.approx(ref_loss.item(), rel=1e-6)
    for p_acc, p_ref in zip(acc.parameters(), ref.parameters(), strict=True):
        np.testing.assert_allclose(p_acc.detach().numpy(), p_ref.detach().numpy(), atol=1e-6)
