"""The PyTorch adapter: ``MaskedMSELoss`` and ``EpsilonRatioMSELoss`` as ``torch.nn.Module``s.

Values and gradients are compared with a float64 NumPy oracle on the valid subset; masked
entries (NaN/inf in ``input`` or ``target``) get exactly zero gradient; the modules work under
``torch.autocast`` and under ``torch.compile(fullgraph=True)`` with zero graph breaks, and
train the motivating three-head CNN; ``import masked_losses.torch`` imports no other
framework. Every test runs on CPU, and on CUDA too when a GPU is available.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

from tests.conftest import require

torch = require("torch")
dynamo = require("torch._dynamo")

from masked_losses import ArgumentError, LabelError, ShapeError  # noqa: E402
from masked_losses.torch import EpsilonRatioMSELoss, MaskedMSELoss  # noqa: E402

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
REDUCTIONS = ("mean", "sum", "none")
EPS = 1e-6


@pytest.fixture(params=DEVICES, ids=[f"torch-{d}" for d in DEVICES])
def device(request):
    return request.param


def to_torch(a, device, requires_grad=False):
    t = torch.from_numpy(np.array(a)).to(device)
    return t.requires_grad_(requires_grad)


def to_numpy(t):
    t = t.detach().cpu()
    return (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t).numpy()


def make_batch(seed, shape=(12, 3), p_valid=0.6):
    """pred, target (NaN where masked), mask, per-sample weights (N, 1); float32."""
    rng = np.random.default_rng(seed)
    pred = rng.normal(size=shape).astype(np.float32)
    target = rng.normal(size=shape).astype(np.float32)
    mask = rng.random(shape) < p_valid
    target[~mask] = np.nan
    weights = rng.uniform(0.5, 2.0, size=(shape[0], 1)).astype(np.float32)
    return pred, target, mask, weights


# ---- float64 NumPy oracles on the valid subset -----------------------------------------------


def oracle_mse(pred, target, mask, weights, reduction):
    p, t = pred.astype(np.float64), target.astype(np.float64)
    w = np.broadcast_to(np.ones(()) if weights is None else weights, p.shape).astype(np.float64)
    v = mask & (w != 0)
    if reduction == "none":
        out = np.zeros_like(p)
        out[v] = w[v] * (p[v] - t[v]) ** 2
        return out
    total = np.sum(w[v] * (p[v] - t[v]) ** 2)
    if reduction == "sum":
        return total
    return total / np.sum(w[v]) if v.any() else 0.0


def oracle_mse_per_column(pred, target, mask):
    return np.array([oracle_mse(pred[:, j], target[:, j], mask[:, j], None, "mean")
                     for j in range(pred.shape[1])])


def oracle_eps(pred, target, reduction):
    p, t = pred.astype(np.float64), target.astype(np.float64)
    v = t != 0
    r = t[v] / (t[v] + EPS)
    if reduction == "none":
        out = np.zeros_like(p)
        out[v] = r * (p[v] - t[v]) ** 2
        return out
    total = np.sum(r * (p[v] - t[v]) ** 2)
    if reduction == "sum":
        return total
    return total / np.sum(r) if v.any() else 0.0


# ---- values and gradients against the oracle -------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_masked_mse_loss_matches_oracle(device, reduction, weighted):
    pred, target, mask, weights = make_batch(0)
    w = weights if weighted else None
    out = MaskedMSELoss(reduction)(
        to_torch(pred, device), to_torch(target, device), to_torch(mask, device),
        None if w is None else to_torch(w, device),
    )
    assert out.device.type == device
    assert out.dtype == torch.float32
    assert out.shape == (pred.shape if reduction == "none" else ())
    np.testing.assert_allclose(to_numpy(out), oracle_mse(pred, target, mask, w, reduction),
                               rtol=1e-5, atol=1e-6)


def test_masked_mse_gradient_matches_oracle_and_is_exactly_zero_where_masked(device):
    pred, target, mask, weights = make_batch(1)
    pred[~mask] = np.where(np.arange((~mask).sum()) % 2 == 0, np.nan, np.inf)  # garbage preds
    p = to_torch(pred, device, requires_grad=True)
    t = to_torch(target, device, requires_grad=True)
    loss = MaskedMSELoss()(p, t, to_torch(mask, device), to_torch(weights, device))
    loss.backward()
    gp, gt = to_numpy(p.grad), to_numpy(t.grad)
    assert np.isfinite(to_numpy(loss))
    assert np.all(gp[~mask] == 0)
    assert np.all(gt[~mask] == 0)
    w = np.broadcast_to(weights, pred.shape).astype(np.float64)
    expected = 2 * w[mask] * (pred[mask].astype(np.float64) - target[mask]) / w[mask].sum()
    np.testing.assert_allclose(gp[mask], expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gt[mask], -expected, rtol=1e-5, atol=1e-7)


def test_axis_and_normalizer_keywords(device):
    pred, target, mask, _ = make_batch(2)
    p, t, m = to_torch(pred, device), to_torch(target, device), to_torch(mask, device)
    per_task = MaskedMSELoss()(p, t, m, axis=0)
    assert per_task.shape == (pred.shape[1],)
    np.testing.assert_allclose(to_numpy(per_task), oracle_mse_per_column(pred, target, mask),
                               rtol=1e-5)
    global_count = 3.0 * mask.sum()  # e.g. the valid count of three micro-batches
    out = MaskedMSELoss()(p, t, m, normalizer=to_torch(np.float32(global_count), device))
    np.testing.assert_allclose(to_numpy(out), oracle_mse(pred, target, mask, None, "sum")
                               / global_count, rtol=1e-5)


@pytest.mark.parametrize("loss_fn", [MaskedMSELoss(), EpsilonRatioMSELoss()],
                         ids=["MaskedMSELoss", "EpsilonRatioMSELoss"])
def test_nothing_valid_gives_zero_value_and_zero_gradient(device, loss_fn):
    pred, _, _, _ = make_batch(3)
    p = to_torch(pred, device, requires_grad=True)
    t = to_torch(np.full_like(pred, np.nan), device, requires_grad=True)
    loss = loss_fn(p, t, to_torch(np.zeros(pred.shape, bool), device))
    loss.backward()
    assert to_numpy(loss) == 0
    assert np.all(to_numpy(p.grad) == 0)
    assert np.all(to_numpy(t.grad) == 0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_epsilon_ratio_loss_matches_oracle_with_zero_gradient_at_missing(device, reduction):
    pred, target, mask, _ = make_batch(4)
    target = np.where(mask, np.abs(target) + 0.1, 0.0).astype(np.float32)  # 0 = missing
    pred[~mask] = np.nan
    p = to_torch(pred, device, requires_grad=True)
    t = to_torch(target, device, requires_grad=True)
    out = EpsilonRatioMSELoss(reduction=reduction)(p, t)
    np.testing.assert_allclose(to_numpy(out), oracle_eps(pred, target, reduction),
                               rtol=1e-5, atol=1e-6)
    out.sum().backward()
    assert np.all(to_numpy(p.grad)[~mask] == 0)
    assert np.all(to_numpy(t.grad)[~mask] == 0)
    assert np.all(np.isfinite(to_numpy(p.grad)))
    assert np.all(np.isfinite(to_numpy(t.grad)))


def test_epsilon_ratio_mask_marks_labels_missing(device):
    pred, target, mask, _ = make_batch(5)
    labels = np.abs(np.nan_to_num(target)) + 0.1
    garbage = np.where(mask, labels, np.nan).astype(np.float32)  # NaN labels under the mask
    p = to_torch(pred, device, requires_grad=True)
    t = to_torch(garbage, device, requires_grad=True)
    out = EpsilonRatioMSELoss()(p, t, to_torch(mask, device))  # check=True passes: NaN masked
    expected = oracle_eps(pred, np.where(mask, labels, 0.0), "mean")
    np.testing.assert_allclose(to_numpy(out), expected, rtol=1e-5)
    out.backward()
    assert np.all(to_numpy(p.grad)[~mask] == 0)
    assert np.all(to_numpy(t.grad)[~mask] == 0)


def test_epsilon_ratio_label_check(device):
    pred = to_torch(np.zeros((4, 2), np.float32), device)
    labels = np.ones((4, 2), np.float32)
    labels[1, 0] = -1.0
    target = to_torch(labels, device)
    with pytest.raises(LabelError, match="1 negative"):
        EpsilonRatioMSELoss()(pred, target)
    unchecked = EpsilonRatioMSELoss(check=False)(pred, target)
    assert unchecked.dtype == torch.float32


# ---- construction, errors, repr ---------------------------------------------------------------


def test_construction_validates_options_and_repr():
    with pytest.raises(ArgumentError, match="reduction must be one of"):
        MaskedMSELoss("elementwise_mean")
    with pytest.raises(ArgumentError, match="reduction must be one of"):
        EpsilonRatioMSELoss(reduction="batchmean")
    with pytest.raises(ArgumentError, match="eps must be a finite number > 0"):
        EpsilonRatioMSELoss(eps=0.0)
    assert repr(MaskedMSELoss("sum")) == "MaskedMSELoss(reduction='sum')"
    assert repr(EpsilonRatioMSELoss(eps=1e-3, check=False)) == (
        "EpsilonRatioMSELoss(eps=0.001, reduction='mean', check=False)"
    )


@pytest.mark.parametrize("loss_fn", [MaskedMSELoss(), EpsilonRatioMSELoss()],
                         ids=["MaskedMSELoss", "EpsilonRatioMSELoss"])
def test_per_sample_mask_of_lower_rank_is_an_error_with_a_hint(loss_fn):
    pred = torch.ones(4, 3)
    with pytest.raises(ShapeError, match=r"mask\[:, None\]"):
        loss_fn(pred, pred, torch.ones(4, dtype=torch.bool))


# ---- autocast -------------------------------------------------------------------------------


def test_autocast_computes_in_float32_like_torch_mse_loss(device):
    pred, target, mask, _ = make_batch(6)
    p16 = to_torch(pred, device).bfloat16()
    t16 = to_torch(target, device).bfloat16()
    m = to_torch(mask, device)
    with torch.autocast(device, dtype=torch.bfloat16):
        layer = torch.nn.Linear(3, 3).to(device)
        out_layer = layer(to_torch(pred, device))
        assert out_layer.dtype == torch.bfloat16  # autocast is really on
        loss = MaskedMSELoss()(p16, t16, m)
        reference = torch.nn.functional.mse_loss(p16, t16)
        eps_loss = EpsilonRatioMSELoss()(p16, t16.abs(), m)
        trained = MaskedMSELoss()(out_layer, to_torch(target, device), m)
    assert loss.dtype == reference.dtype == eps_loss.dtype == torch.float32
    rounded_p, rounded_t = to_numpy(p16), to_numpy(t16)  # the bf16 values, exactly
    np.testing.assert_allclose(to_numpy(loss), oracle_mse(rounded_p, rounded_t, mask, None, "mean"),
                               rtol=1e-5)
    trained.backward()
    assert np.isfinite(to_numpy(trained))
    assert torch.isfinite(layer.weight.grad).all()
    # outside autocast the core's rule holds: bf16 in, bf16 out (accumulated in float32)
    assert MaskedMSELoss()(p16, t16, m).dtype == torch.bfloat16


# ---- torch.compile --------------------------------------------------------------------------

COMPILE_CASES = {
    "mask": lambda: (MaskedMSELoss(), {"mask": True}),
    "mask+weight+axis": lambda: (MaskedMSELoss(), {"mask": True, "weight": True, "axis": 0}),
    "none": lambda: (MaskedMSELoss("none"), {"mask": True}),
    "no-mask+axis": lambda: (MaskedMSELoss(), {"axis": 0}),
    "epsilon+check": lambda: (EpsilonRatioMSELoss(check=True), {"eps_target": True}),
    "epsilon+mask": lambda: (
        EpsilonRatioMSELoss(reduction="sum"), {"mask": True, "eps_target": True}
    ),
}


def compile_inputs(device, n, case, seed=7):
    """Inputs for a COMPILE_CASES case; garbage (NaN) wherever the case masks an entry."""
    pred, target, mask, weights = make_batch(seed, shape=(n, 3))
    if not (case.get("mask") or case.get("eps_target")):  # nothing masked
        mask = np.ones_like(mask)
        target = np.nan_to_num(target)
    if case.get("eps_target"):  # 0 marks missing, or NaN under an explicit mask
        target = np.where(mask, np.abs(target) + 0.1, np.nan if case.get("mask") else 0.0)
        target = target.astype(np.float32)
    pred[~mask] = np.nan
    args = [to_torch(pred, device, True), to_torch(target, device, True)]
    kwargs = {}
    if case.get("mask"):
        kwargs["mask"] = to_torch(mask, device)
    if case.get("weight"):
        kwargs["weight"] = to_torch(weights, device)
    if "axis" in case:
        kwargs["axis"] = case["axis"]
    return args, kwargs, mask


@pytest.mark.parametrize("name", COMPILE_CASES)
def test_dynamo_sees_no_graph_break(device, name):
    loss_fn, case = COMPILE_CASES[name]()
    args, kwargs, _ = compile_inputs(device, 8, case)
    dynamo.reset()  # count this case's graphs only, not recompiles of earlier tests' code
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. dynamo tracing into array-api-compat's caches
        explanation = dynamo.explain(loss_fn)(*args, **kwargs)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.parametrize("name", ["mask+weight+axis", "no-mask+axis", "epsilon+mask"])
def test_fullgraph_compile_matches_eager_value_and_gradient(device, name):
    # aot_eager runs dynamo + AOTAutograd (the parts that see our code) without codegen; the
    # default inductor backend is exercised by the CNN test below.
    loss_fn, case = COMPILE_CASES[name]()
    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
    for n in (8, 5):  # a second batch size recompiles with symbolic shapes
        args, kwargs, mask = compile_inputs(device, n, case, seed=n)
        eager_args = [a.detach().clone().requires_grad_() for a in args]
        out, ref = compiled(*args, **kwargs), loss_fn(*eager_args, **kwargs)
        np.testing.assert_allclose(to_numpy(out), to_numpy(ref), rtol=1e-6)
        out.sum().backward()
        ref.sum().backward()
        for a, e in zip(args, eager_args, strict=True):
            np.testing.assert_allclose(to_numpy(a.grad), to_numpy(e.grad), rtol=1e-6, atol=1e-7)
            assert np.all(to_numpy(a.grad)[~mask] == 0)


class ThreeHeadCNN(torch.nn.Module):
    """One image in; a sigmoid classifier, a regression for all, a regression for positives."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        )
        self.classifier = torch.nn.Linear(4, 1)
        self.regression = torch.nn.Linear(4, 1)
        self.positive_regression = torch.nn.Linear(4, 1)

    def forward(self, x):
        h = self.body(x)
        return torch.sigmoid(self.classifier(h)), self.regression(h), self.positive_regression(h)


def multitask_loss(model, x, label, y_all, y_pos):
    prob, out_all, out_pos = model(x)
    return (
        torch.nn.functional.binary_cross_entropy(prob, label)
        + torch.nn.functional.mse_loss(out_all, y_all)
        + MaskedMSELoss()(out_pos, y_pos, ~torch.isnan(y_pos))  # NaN for negatives
    )


@pytest.mark.slow
def test_three_head_cnn_trains_under_fullgraph_compile(device):
    torch.manual_seed(0)
    n = 16
    x = torch.randn(n, 1, 8, 8, device=device)
    label = (torch.rand(n, 1, device=device) < 0.5).float()
    y_all = torch.randn(n, 1, device=device)
    y_pos = torch.where(label > 0, torch.randn(n, 1, device=device), float("nan"))
    model = ThreeHeadCNN().to(device)
    eager_model = copy.deepcopy(model)
    step = torch.compile(multitask_loss, fullgraph=True)

    loss = step(model, x, label, y_all, y_pos)
    loss.backward()
    eager_loss = multitask_loss(eager_model, x, label, y_all, y_pos)
    eager_loss.backward()
    np.testing.assert_allclose(loss.item(), eager_loss.item(), rtol=1e-5)
    for p, e in zip(model.parameters(), eager_model.parameters(), strict=True):
        np.testing.assert_allclose(to_numpy(p.grad), to_numpy(e.grad), rtol=1e-4, atol=1e-6)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer.step()
    losses = [loss.item()]
    for _ in range(4):
        optimizer.zero_grad()
        loss = step(model, x, label, y_all, y_pos)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.all(np.isfinite(losses))
    assert all(torch.isfinite(p).all() for p in model.parameters())
