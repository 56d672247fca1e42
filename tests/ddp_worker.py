"""One rank of the 2-process DDP check in tests/test_ddp.py (also importable for its data).

Run as ``python tests/ddp_worker.py RANK WORLD_SIZE INIT_FILE OUT_FILE``. The rank joins a gloo
process group (file rendezvous, CPU only), trains the same small model twice with
DistributedDataParallel for ``len(STEPS)`` optimiser steps, once with
``normalizer=ddp_normalizer(mask)`` and once with the per-rank mean (the biased recipe), and
saves the parameters, the global counts and the all-reduced metrics to OUT_FILE.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

N_IN, N_HIDDEN, N_OUT = 4, 8, 3
# rows of each step's global batch owned by each rank (unequal local batch sizes)
RANK_ROWS = ((0, 10), (10, 16))
N_ROWS = RANK_ROWS[-1][1]
STEPS = 3
LR, MOMENTUM = 0.1, 0.9


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(N_IN, N_HIDDEN), torch.nn.Tanh(), torch.nn.Linear(N_HIDDEN, N_OUT)
    )


def step_data(step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The global batch of one step: x, y (NaN where missing) and the mask."""
    rng = np.random.default_rng(1000 + step)
    x = rng.normal(size=(N_ROWS, N_IN)).astype(np.float32)
    y = rng.normal(size=(N_ROWS, N_OUT)).astype(np.float32) + x[:, :N_OUT]
    mask = rng.random((N_ROWS, N_OUT)) < 0.5
    r1 = slice(*RANK_ROWS[1])
    if step == 0:  # rank 1 has no valid entry at all, rank 0 has many
        mask[r1] = False
        mask[slice(*RANK_ROWS[0])] = True
    elif step == 1:  # rank 0 has a single valid entry, rank 1 is fully labelled
        mask[slice(*RANK_ROWS[0])] = False
        mask[0, 1] = True
        mask[r1] = True
    y = np.where(mask, y, np.nan).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(mask)


def train(model: torch.nn.Module, rows: tuple[int, int] | None, normalise: str) -> None:
    """STEPS optimiser steps on ``rows`` of each global batch (None: the whole batch).

    ``normalise`` is ``"ddp"`` (normalizer=ddp_normalizer(mask)) or ``"local"`` (the plain
    masked mean of the local rows).
    """
    from masked_losses.torch import MaskedMSELoss, ddp_normalizer

    loss_fn = MaskedMSELoss()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    for step in range(STEPS):
        x, y, mask = step_data(step)
        if rows is not None:
            x, y, mask = (a[rows[0] : rows[1]] for a in (x, y, mask))
        opt.zero_grad()
        normalizer = ddp_normalizer(mask) if normalise == "ddp" else None
        loss = loss_fn(model(x), y, mask, normalizer=normalizer)
        loss.backward()
        opt.step()


def params_of(model: torch.nn.Module) -> list[np.ndarray]:
    inner = getattr(model, "module", model)
    return [p.detach().numpy().copy() for p in inner.parameters()]


def main(rank: int, world: int, init_file: str, out_file: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from masked_losses import metrics_init, metrics_update
    from masked_losses.torch import all_reduce_metrics, global_valid_count

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    rows = RANK_ROWS[rank]
    result: dict[str, object] = {}
    for normalise in ("ddp", "local"):
        model = DDP(make_model())
        train(model, rows, normalise)
        result[f"params_{normalise}"] = params_of(model)

    counts, weighted = [], []
    state = None
    for step in range(STEPS):
        x, y, mask = step_data(step)
        x, y, mask = (a[rows[0] : rows[1]] for a in (x, y, mask))
        counts.append(int(global_valid_count(mask)))
        weights = torch.arange(1, mask.shape[0] + 1, dtype=torch.float32)[:, None] + rank
        weighted.append(float(global_valid_count(mask, weights.expand_as(mask))))
        pred = x[:, :N_OUT]
        state = metrics_init(pred) if state is None else state
        state = metrics_update(state, pred, y, mask)
    result["counts"] = counts
    result["weighted_counts"] = weighted
    result["per_task_count"] = global_valid_count(step_data(0)[2][rows[0] : rows[1]], axis=0)
    result["metrics"] = [a.numpy() for a in all_reduce_metrics(state)]
    dist.barrier()
    dist.destroy_process_group()
    torch.save(result, out_file)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
