"""Deletion capacity (issue 14): how many deletions a trained model can serve, each release certified at (ε, δ),
before the released model loses more than a given accuracy budget to the noise; after that a retrain is due.

The certificate of a release covers every record deleted so far (U_k), so σ_k = σ(ε, δ, Δ(U_k)) grows with k. The
release after k deletions is within budget when its expected accuracy (over noise draws) is at least the noiseless
state's accuracy minus ``max_accuracy_loss``. :func:`deletion_capacity` searches a deletion stream (random, or a given
request order) for the largest such k: geometric checkpoints until the first one over budget (or not certifiable),
then bisection between the last good and the first bad checkpoint (Δ(U_k) grows with k, so the answer is the
boundary). :func:`sigma_budget` gives the largest σ a model tolerates (ε-independent), which a trained run keeps so
that ``forget`` can tell, without the test data, whether a release is still within budget.

The search is torch-free (the caller evaluates a prefix of the stream through a callback);
:func:`unlearner_capacity` and :func:`release_sigma_budget` are that callback for a fitted HF-OCU unlearner on
held-out data (its state is not changed: a prefix is evaluated as w_T + Σ_{u ∈ prefix} a_u).

    cap = unlearner_capacity(unlearner, x_test, y_test, epsilon=1.0, delta=1e-5, max_accuracy_loss=0.02)
    cap.capacity      # random deletions whose certified releases stay within 2 points of the noiseless accuracy
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from unlearn_audit.certify.errors import CertificationError

__all__ = ["CapacityPoint", "DeletionCapacity", "deletion_capacity", "release_sigma_budget", "sigma_budget",
           "unlearner_capacity"]


@dataclass(frozen=True)
class CapacityPoint:
    """The release after the first ``n_deleted`` deletions of the stream.

    sensitivity: Δ(U_k) (None when not certifiable); sigma: the calibrated σ_k (None when not certifiable);
    noiseless_accuracy / released_accuracy: test accuracy of the noiseless state and mean over noise draws of the
    release (fractions in [0, 1]); within_budget: released ≥ noiseless − max_accuracy_loss (and certifiable)."""

    n_deleted: int
    sensitivity: float | None
    sigma: float | None
    noiseless_accuracy: float
    released_accuracy: float | None
    within_budget: bool
    reason: str = ""


@dataclass(frozen=True)
class DeletionCapacity:
    """Result of :func:`deletion_capacity`.

    capacity: the largest k whose release is within budget (0: not even one deletion); exhausted_stream: True when
    the whole stream stayed within budget (capacity is then a lower bound); points: every evaluated prefix, sorted by
    k (the curve for the report); stream: "random" (a seeded random order of the training records) or "given"."""

    epsilon: float
    delta: float
    max_accuracy_loss: float
    mechanism: str
    stream: str
    stream_length: int
    capacity: int
    exhausted_stream: bool
    points: tuple[CapacityPoint, ...] = field(default_factory=tuple)
    bound: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def remaining(self, n_deleted: int) -> int:
        """Deletions left before a retrain is due, for a service that has already deleted ``n_deleted`` records
        (an estimate when the actual requests differ from the stream)."""
        return max(0, self.capacity - int(n_deleted))


def deletion_capacity(evaluate: Callable[[int], CapacityPoint], stream_length: int, *, epsilon: float, delta: float,
                      max_accuracy_loss: float, mechanism: str = "analytic", stream: str = "random",
                      bound: str = "", growth: float = 1.6) -> DeletionCapacity:
    """Largest k ≤ ``stream_length`` whose release is within budget, by geometric checkpoints then bisection.

    Args:
        evaluate: k -> CapacityPoint for the first k deletions of the stream (the caller certifies and measures).
        stream_length: deletions available in the stream (≥ 1).
        growth: ratio between successive checkpoints (> 1).
    """
    if stream_length < 1:
        raise CertificationError("the deletion stream is empty")
    if not (0 <= max_accuracy_loss < 1):
        raise CertificationError(f"max_accuracy_loss must be in [0, 1), got {max_accuracy_loss!r}")
    if growth <= 1:
        raise CertificationError("growth must exceed 1")
    seen: dict[int, CapacityPoint] = {}

    def at(k: int) -> CapacityPoint:
        if k not in seen:
            seen[k] = evaluate(k)
        return seen[k]

    good, bad, k = 0, None, 1
    while True:
        if at(k).within_budget:
            good = k
            if k == stream_length:
                break
            k = min(stream_length, max(k + 1, int(math.ceil(k * growth))))
        else:
            bad = k
            break
    if bad is not None:
        while bad - good > 1:
            mid = (good + bad) // 2
            if at(mid).within_budget:
                good = mid
            else:
                bad = mid
    return DeletionCapacity(epsilon=float(epsilon), delta=float(delta), max_accuracy_loss=float(max_accuracy_loss),
                            mechanism=mechanism, stream=stream, stream_length=int(stream_length), capacity=int(good),
                            exhausted_stream=bad is None, points=tuple(seen[k] for k in sorted(seen)), bound=bound)


def sigma_budget(released_accuracy: Callable[[float], float], noiseless_accuracy: float, max_accuracy_loss: float,
                 *, sigma_max: float = 1e3, tol: float = 0.02) -> float:
    """The largest σ (to a relative ``tol``) with released_accuracy(σ) ≥ noiseless − max_accuracy_loss, by bisection
    in log σ (``released_accuracy`` should use fixed noise draws so that it is monotone in σ). 0 if even a tiny σ
    breaks the budget; ``sigma_max`` if it never does."""
    floor = noiseless_accuracy - max_accuracy_loss
    lo, hi = 1e-8, sigma_max
    if released_accuracy(lo) < floor:
        return 0.0
    if released_accuracy(hi) >= floor:
        return hi
    while hi / lo > 1 + tol:
        mid = math.sqrt(lo * hi)
        if released_accuracy(mid) >= floor:
            lo = mid
        else:
            hi = mid
    return lo


def _noise(dim: int, draws: int, seed: int, dtype):
    import torch

    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(draws, dim, generator=g, dtype=torch.float64).to(dtype)


def unlearner_capacity(unlearner, x_test, y_test, *, epsilon: float, delta: float,
                       max_accuracy_loss: float, mechanism: str = "analytic", stream=None, seed: int = 0,
                       noise_draws: int = 8, max_stream: int | None = None) -> DeletionCapacity:
    """Deletion capacity of a fitted unlearner: the number of deletions (a seeded random order of its tracked
    records, or ``stream``: record ids in request order) whose certified release at (ε, δ) keeps the test accuracy,
    averaged over ``noise_draws`` fixed noise draws, within ``max_accuracy_loss`` of the noiseless state's.
    ``max_stream`` caps a random stream (default: half the training set)."""
    from unlearn_audit.certify.aposteriori import NotCertifiable
    from unlearn_audit.certify.mechanisms import calibrate

    un = unlearner
    model = un.model
    if stream is None:
        tracked = np.asarray(un.tracked_positions_)
        order = np.random.default_rng(seed).permutation(tracked)
        cap = max(1, len(un.ids_) // 2) if max_stream is None else int(max_stream)
        order = order[:cap]
        kind = "random"
    else:
        order = un._positions(list(stream), check_deleted=False)
        kind = "given"
    ids = np.asarray(un.ids_)
    w0 = un.weights_
    z = _noise(model.dim, noise_draws, seed + 1, w0.dtype)

    def evaluate(k: int) -> CapacityPoint:
        pick = ids[order[:k]].tolist()
        state = w0 + un.approximator_sum(pick)
        clean = model.accuracy(state, x_test, y_test)
        try:
            cert = un.certificate(pick)
        except NotCertifiable as err:
            return CapacityPoint(k, None, None, clean, None, False, str(err)[:300])
        sigma = calibrate(epsilon, delta, cert.sensitivity, mechanism)
        rel = float(np.mean([model.accuracy(state + sigma * z[j], x_test, y_test) for j in range(len(z))]))
        ok = rel >= clean - max_accuracy_loss
        return CapacityPoint(k, float(cert.sensitivity), float(sigma), clean, rel, ok,
                             "" if ok else f"released accuracy {rel:.4f} < noiseless {clean:.4f} - "
                                           f"{max_accuracy_loss:g}")

    if len(order) == 0:
        raise CertificationError("no records to delete in the stream")
    return deletion_capacity(evaluate, len(order), epsilon=epsilon, delta=delta, max_accuracy_loss=max_accuracy_loss,
                             mechanism=mechanism, stream=kind, bound=un.bound)


def release_sigma_budget(unlearner, x_test, y_test, *, max_accuracy_loss: float,
                         seed: int = 0, noise_draws: int = 8) -> dict:
    """The largest noise σ the trained model w_T tolerates within ``max_accuracy_loss`` of its test accuracy (fixed
    noise draws): what a trained run keeps so that ``forget`` can say when a retrain is due (ε-independent)."""
    model, w = unlearner.model, unlearner.weights_
    z = _noise(model.dim, noise_draws, seed + 1, w.dtype)
    clean = model.accuracy(w, x_test, y_test)

    def acc(sigma: float) -> float:
        return float(np.mean([model.accuracy(w + sigma * z[j], x_test, y_test) for j in range(len(z))]))

    s = sigma_budget(acc, clean, max_accuracy_loss)
    return {"sigma_budget": float(s), "max_accuracy_loss": float(max_accuracy_loss), "noiseless_accuracy": clean,
            "noise_draws": int(noise_draws), "n_test": int(len(y_test))}
