"""Everything one audit run shares between its steps: data tensors, the trained model, the forget set."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from unlearn_audit.audit.protocol import ForgetSplit
from unlearn_audit.config import AuditConfig
from unlearn_audit.hfocu import HFOCUUnlearner
from unlearn_audit.models import FunctionalModel
from unlearn_audit.pseudonyms import new_key
from unlearn_audit.training import Schedule, SGDConfig


@dataclass
class AuditContext(ForgetSplit):
    """Shared state of one run. Training positions index ``x``/``y``; labels for attacks are 1 = forget-set record
    (trained on, then deleted), 0 = record never trained on (population)."""

    cfg: AuditConfig
    model: FunctionalModel
    sgd: SGDConfig
    x: torch.Tensor
    y: torch.Tensor
    train_ids: np.ndarray
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_pop: torch.Tensor
    y_pop: torch.Tensor
    unlearner: HFOCUUnlearner
    schedule: Schedule
    w_original: torch.Tensor
    forget_positions: np.ndarray
    forget_ids: list[str]
    w_retrain: torch.Tensor
    retrain_seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    record_id_key: bytes = field(default_factory=new_key)
    """Key of the record pseudonyms in results.json and the report (HMAC-SHA256); saved as the run folder's
    record_id.key, never shown."""

    @property
    def noise_seed(self) -> int:
        return self.cfg.seed + 1

    def accuracies(self, w: torch.Tensor) -> dict[str, float]:
        m = self.model
        return {"test": m.accuracy(w, self.x_test, self.y_test), "forget": m.accuracy(w, *self.forget),
                "retain": m.accuracy(w, *self.retain)}
