"""Many paired models trained at once (DESIGN §4b): the evidence behind the audit's forgetting verdict.

One trained model and one retrain are one draw of each; attacks on that pair test two fixed models, not the
unlearning procedure. Here N models are trained on the same training set with independent training randomness
(initialisation and batch schedule from a per-model seed; data split and forget set U fixed), all N in one
``torch.func.vmap``-ed step per training step. For each model the same pass gives

* the original weights w_T (trained on everything);
* the HF-OCU approximator of U, A_T = Σ_{u∈U} a_u(T), advanced by the jvp of the exact update map: the tangent
  (a, −1_U) of the map (w, m) ↦ w_{t+1}(w; batch weights m) is J_w a − ∂_m w_{t+1}·1_U, i.e. propagate-then-inject
  (DESIGN §2.3) with clipping and projection linearised exactly, as the engine does; by additivity the sum of U's
  approximators is all the audit needs, so only one vector per model is kept;
* the exact retrain without U (records of U get batch weight 0; ``sum`` or ``mean`` normalisation).

Batch weights keep every model's batch the same shape, which is what lets N schedules run in one vmap.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch
from torch.func import jvp, vmap

from unlearn_audit.models import FunctionalModel
from unlearn_audit.training import Schedule, SGDConfig
from unlearn_audit.training.sgd import update_map

Progress = Callable[[int, int], None]


@dataclass
class PairedModels:
    """N models trained together. Row i of every matrix belongs to training seed ``seeds[i]``.

    ``original``: w_T, (N, d); ``approximator``: Σ_{u∈U} a_u(T), (N, d), or None when not kept; ``retrain``: exact
    retrain without U on model i's own schedule and initialisation, (N, d).
    """

    seeds: np.ndarray
    original: torch.Tensor | None
    approximator: torch.Tensor | None
    retrain: torch.Tensor
    schedules: list[Schedule]
    normalisation: str
    seconds: float

    @property
    def n(self) -> int:
        return len(self.seeds)

    def original_weights(self) -> torch.Tensor:
        """w_T of every model, (N, d); these models must have been trained with originals."""
        if self.original is None:
            raise ValueError("these models were trained without originals (reference retrains)")
        return self.original

    @property
    def hfocu(self) -> torch.Tensor:
        """HF-OCU's noiseless unlearned weights w_T + Σ_{u∈U} a_u, (N, d)."""
        if self.original is None or self.approximator is None:
            raise ValueError("these models were trained without originals or approximators")
        return self.original + self.approximator


def train_paired(model: FunctionalModel, x: torch.Tensor, y: torch.Tensor, sgd: SGDConfig,
                 forget_positions: np.ndarray, seeds: np.ndarray, initial_weights: Callable[[int], torch.Tensor], *,
                 normalisation: Literal["sum", "mean"] = "sum", originals: bool = True,
                 dtype: torch.dtype = torch.float32, progress: Progress | None = None) -> PairedModels:
    """Train len(seeds) models at once; see the module docstring.

    ``initial_weights(seed)`` gives w_0 of the model trained with ``seed`` (projected onto the weight-norm ball like
    every training start); the batch schedule of that model is ``Schedule.make(n, ..., seed)``. ``originals=False``
    trains the retrains only (reference models).
    """
    from unlearn_audit.training.sgd import starting_point

    if normalisation not in ("sum", "mean"):
        raise ValueError(f"normalisation must be 'sum' or 'mean', got '{normalisation}'")
    seeds = np.asarray(seeds, dtype=np.int64)
    n = len(x)
    schedules = [Schedule.make(n, sgd.epochs, sgd.batch_size, sgd.lr, sgd.decay, int(s)) for s in seeds]
    w0 = torch.stack([starting_point(model, sgd, initial_weights(int(s)), dtype) for s in seeds])
    forget = torch.zeros(n, dtype=dtype)
    forget[torch.as_tensor(np.asarray(forget_positions, dtype=np.int64))] = 1.0
    x, W, R = x.to(dtype), w0.clone(), w0.clone()
    A = torch.zeros_like(W) if originals else None
    start = time.perf_counter()
    n_steps = schedules[0].n_steps
    for t in range(n_steps):
        pos = torch.as_tensor(np.stack([s.batches[t] for s in schedules]))          # (N, B): same B for every seed
        lr, b = float(schedules[0].lrs[t]), pos.shape[1]
        bx, by, u = x[pos], y[pos], forget[pos]

        def original_step(w, a, bx_, by_, u_):
            step = lambda w_, m_: update_map(model, sgd, lr, bx_, by_, float(b), m_)(w_)       # noqa: E731
            return jvp(step, (w, torch.ones_like(u_)), (a, -u_))

        def retrain_step(r, bx_, by_, u_):
            keep = 1.0 - u_
            if normalisation == "sum":
                return update_map(model, sgd, lr, bx_, by_, float(b), keep)(r)
            kept = keep.sum()
            r_new = update_map(model, sgd, lr, bx_, by_, torch.clamp(kept, min=1.0), keep)(r)
            return torch.where(kept > 0, r_new, r)                                   # an emptied batch is skipped

        if originals:
            W, A = vmap(original_step)(W, A, bx, by, u)
            W, A = W.detach(), A.detach()
        R = vmap(retrain_step)(R, bx, by, u).detach()
        if progress is not None:
            progress(t + 1, n_steps)
    return PairedModels(seeds=seeds, original=W if originals else None, approximator=A, retrain=R,
                        schedules=schedules, normalisation=normalisation, seconds=time.perf_counter() - start)
