"""The unlearning-method protocol: what every method the audit judges implements, built-in or yours.

A method gets an :class:`UnlearningTask` (the trained run: model, training records, batch schedule, SGD settings,
trained weights w_T, and the records to forget) and returns the unlearned weights, as an
:class:`UnlearningResult` (optionally with a released model, its noise σ and a certificate, and per-request
timings) or as a bare weight vector. The audit judges every method the same way: distance to exact retraining,
accuracy, the attacks, and the per-example test over N paired models, where the method is run once on each pair's
own trained model (unless it has a batched form, :meth:`UnlearningMethod.paired`).

Your method, in ``unlearning.methods = ["package.module:Class"]``::

    from unlearn_audit.audit.protocol import UnlearningMethod, UnlearningResult, UnlearningTask

    class GradientAscent(UnlearningMethod):
        description = "a few steps of gradient ascent on the forget set"

        def unlearn(self, task: UnlearningTask) -> UnlearningResult:
            w = task.weights.clone()
            ...
            return UnlearningResult(weights=w)

The class is instantiated with no arguments. A method never sees the retrained model, the test split or the
population: only what a deployed unlearner would have.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, ClassVar

import numpy as np
import torch

from unlearn_audit.audit.pairs import PairedModels
from unlearn_audit.config import AuditConfig
from unlearn_audit.models import FunctionalModel
from unlearn_audit.training import Schedule, SGDConfig

if TYPE_CHECKING:
    from unlearn_audit.hfocu import HFOCUUnlearner

__all__ = ["PairedRun", "RequestTiming", "UnlearningMethod", "UnlearningResult", "UnlearningTask"]


class ForgetSplit:
    """The training records split into the forget set U and the rest, for a class holding ``x``, ``y`` (training
    tensors) and ``forget_positions`` (training positions of U): the audit's context and a method's task alike."""

    x: torch.Tensor
    y: torch.Tensor
    forget_positions: np.ndarray

    @property
    def retain_mask(self) -> np.ndarray:
        """(n,) bool: True for the records that stay."""
        mask = np.ones(len(self.x), dtype=bool)
        mask[self.forget_positions] = False
        return mask

    @property
    def forget(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of the forget set, in the order of ``forget_positions``."""
        pos = torch.as_tensor(self.forget_positions)
        return self.x[pos], self.y[pos]

    @property
    def retain(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of the retained records."""
        keep = torch.as_tensor(self.retain_mask)
        return self.x[keep], self.y[keep]


@dataclass(frozen=True)
class UnlearningTask(ForgetSplit):
    """The trained run and the records to forget.

    ``x`` (n, *input_shape) float32 and ``y`` (n,) int64: the training records, indexed by training position;
    ``record_ids`` (n,) their ids; ``schedule``: the recorded batch schedule (``schedule.batches[t]`` are the
    positions of step t's batch, ``schedule.lrs[t]`` its step size); ``sgd``: the SGD settings (λ, clipping,
    projection); ``weights``: the trained w_T, (d,) (``model.logits(w, x)`` evaluates any weights); ``forget_positions``
    (k,) int64 and ``forget_ids``: the forget set U; ``seed``: the training seed of this run (each paired model has
    its own); ``requests``: how many deletion requests U is sent as (:meth:`request_chunks`); ``config``: the whole
    audit config (read-only); ``hfocu``: the HF-OCU unlearner fitted with this run (its approximators), when the
    audit has one (the built-in ``hfocu`` method uses it; None for the paired models). ``x``, ``y``, ``model``,
    ``record_ids`` and ``schedule`` are the audit's own (not copied, to keep memory flat over the N pairs): never
    modify them in place (the audit refuses a plugin that does); ``weights``, ``forget_positions`` and ``config`` are
    the method's own copies.
    """

    model: FunctionalModel
    x: torch.Tensor
    y: torch.Tensor
    record_ids: np.ndarray
    schedule: Schedule
    sgd: SGDConfig
    weights: torch.Tensor
    forget_positions: np.ndarray
    forget_ids: tuple[str, ...]
    seed: int
    requests: int
    config: AuditConfig
    hfocu: "HFOCUUnlearner | None" = None

    def request_chunks(self) -> list[np.ndarray]:
        """Indices into ``forget_positions`` of each deletion request (``requests`` chunks, as even as possible)."""
        k = len(self.forget_positions)
        return np.array_split(np.arange(k), min(self.requests, k))


@dataclass
class RequestTiming:
    """One deletion request a method served: ``indices`` into ``task.forget_positions``, its wall time in seconds
    and JSON-ready ``details`` shown with the request in results.json."""

    indices: np.ndarray
    seconds: float
    details: dict = field(default_factory=dict)


@dataclass
class UnlearningResult:
    """What a method returns. ``weights``: the noiseless unlearned weights (d,). A certified method also gives
    ``released`` (what it would publish: weights plus noise of scale ``sigma``) and ``certificate`` (JSON-ready,
    with at least ``epsilon``, ``delta``, ``sigma`` and ``sensitivity``: the audit checks the release against it).
    ``requests``: per-request timings (None = the whole forget set as one request, timed by the audit; an empty
    list = no deletion requests at all, e.g. a model trained differently or weights unlearned elsewhere);
    ``precompute_seconds`` / ``storage_bytes``: work done and memory kept before the requests; ``description``
    overrides the method's; ``extra``: JSON-ready facts shown with the method."""

    weights: torch.Tensor
    released: torch.Tensor | None = None
    sigma: float = 0.0
    certified: bool = False
    certificate: dict | None = None
    requests: list[RequestTiming] | None = None
    precompute_seconds: float = 0.0
    storage_bytes: int = 0
    description: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class PairedRun:
    """The N paired models of the per-example tests, for methods with a batched form: ``pairs`` (originals, HF-OCU
    approximators of U, exact retrains), and ``independent_retrains()``: exact retrains from seeds independent of
    both the pairs and the reference (for exact retraining judged as a method)."""

    pairs: PairedModels
    independent_retrains: Callable[[], torch.Tensor]


class UnlearningMethod(ABC):
    """An unlearning method. Implement :meth:`unlearn`; optionally :meth:`paired` (a batched form for the N paired
    models) and :meth:`diagnostics` (audit-only facts that need the retrained model, which the method never sees).
    ``pairable = False`` marks a method that cannot be rerun on other trained models (weights unlearned outside the
    tool): the per-example test over paired models then cannot judge it."""

    name: str = ""
    description: str = ""
    pairable: ClassVar[bool] = True

    @abstractmethod
    def unlearn(self, task: UnlearningTask) -> UnlearningResult | torch.Tensor | np.ndarray:
        """Unlearn ``task.forget_positions`` from ``task.weights``; return the unlearned weights (d,)."""

    def paired(self, run: PairedRun) -> torch.Tensor | None:
        """The unlearned weights of all N paired models at once, (N, d), or None to have :meth:`unlearn` run once
        per pair."""
        return None

    def diagnostics(self, result: UnlearningResult, task: UnlearningTask, w_retrain: torch.Tensor) -> dict:
        """Audit-only facts about ``result`` that need the exact retrain ``w_retrain`` (shown with the method)."""
        return {}
