"""Typed objects of the audit core: what is attacked (:class:`Target`).

Label convention of every score: 1 = forget-set record (trained on, then deleted), 0 = record never trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
