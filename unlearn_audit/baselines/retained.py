"""State every Newton-type baseline (ns, ij, cns) keeps: the trained weights and training set in float64, which
records are deleted so far, the current estimate, and the data Hessian over any subset of the records."""

from __future__ import annotations

import numpy as np
import torch

from unlearn_audit.baselines.hessian import DTYPE, DataHessian
from unlearn_audit.models import FunctionalModel


class TrainingSetBaseline:
    """Base of the baselines that need the training data at request time. Subclasses set ``model``, ``lam`` and
    ``hvp_dtype`` (see :func:`unlearn_audit.baselines.hessian.resolve_hvp_dtype`) in ``__init__``."""

    model: FunctionalModel
    lam: float
    hvp_dtype: torch.dtype

    def _keep_training_set(self, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> None:
        """w_ (trained weights), x_, y_ (float64 records), n_, removed_ (bool mask, nothing yet) and state_."""
        self.w_ = w.detach().to(DTYPE).clone()
        self.x_, self.y_ = x.to(DTYPE), y
        self.n_ = len(x)
        self.removed_ = np.zeros(self.n_, dtype=bool)
        self.state_ = self.w_.clone()

    def _hessian_at(self, w: torch.Tensor, mask: np.ndarray | None = None) -> DataHessian:
        """H_D(w) for D = the records where ``mask`` is True (all records when ``mask`` is None)."""
        if mask is None:
            return DataHessian(self.model, self.lam, w, self.x_, self.y_, hvp_dtype=self.hvp_dtype)
        idx = torch.as_tensor(np.nonzero(mask)[0])
        return DataHessian(self.model, self.lam, w, self.x_[idx], self.y_[idx], hvp_dtype=self.hvp_dtype)
