"""Typed objects of the audit core: what is attacked (:class:`Target`) and what one attack on it gave
(:class:`AttackRun`).

Label convention of every score: 1 = forget-set record (trained on, then deleted), 0 = record never trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

State = Literal["noiseless", "released"]


@dataclass(frozen=True)
class Target:
    """One model under attack: ``method`` (original, retrain, hfocu, …) in ``state`` (noiseless, or released with
    Gaussian noise of scale ``sigma`` drawn from ``noise_seed``). A released retrain reference always has its own
    noise draw, independent of the method's."""

    method: str
    state: State
    weights: torch.Tensor
    sigma: float = 0.0
    noise_seed: int | None = None
    role: str = ""          # e.g. "reference for hfocu": shown in the report

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.state if not self.role else f"{self.state}, {self.role}")

    @property
    def label(self) -> str:
        noise = f" σ={self.sigma:.4g}" if self.state == "released" else ""
        return f"{self.method} ({self.state}{noise}{', ' + self.role if self.role else ''})"


@dataclass(frozen=True)
class AttackRun:
    """One attack on one target: ``row``, the JSON-ready result written to results.json (AUC with its interval,
    TPR at fixed FPR, sample sizes; ``row["refused"]`` says why when the attack refused), and the per-record scores
    behind it, ``member_scores`` (label 1: forget-set records) and ``nonmember_scores`` (label 0: never-trained
    population records), float64, higher = more member-like, the same records in the same order on every target so
    that paired tests across targets are valid. A refused attack has no scores."""

    row: dict
    member_scores: np.ndarray | None = None
    nonmember_scores: np.ndarray | None = None

    def __post_init__(self):
        if (self.member_scores is None) != (self.nonmember_scores is None):
            raise ValueError("an attack run has both member and non-member scores or neither")
        if self.scored:
            object.__setattr__(self, "member_scores", np.asarray(self.member_scores, np.float64))
            object.__setattr__(self, "nonmember_scores", np.asarray(self.nonmember_scores, np.float64))

    @property
    def scored(self) -> bool:
        """Whether the attack reported scores (False when it refused)."""
        return self.member_scores is not None

    @property
    def refused(self) -> str | None:
        return self.row.get("refused")

    @property
    def attack(self) -> str:
        return self.row["attack"]

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(member scores, non-member scores); a refused attack has none and raises."""
        if self.member_scores is None or self.nonmember_scores is None:
            raise ValueError(f"{self.attack} on {self.row.get('target')} refused and has no scores: {self.refused}")
        return self.member_scores, self.nonmember_scores
