"""MIA-L, the loss attack (Yeom et al., CSF 2018): score = -loss of the target model on the record.

Label convention: 1 = member (for an unlearning audit: a deleted record), 0 = non-member (a record the
model never trained on); higher score = more likely member. Members tend to have low loss, hence the sign.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import signals
from ._validation import float_array
from .results import AttackResult

__all__ = ["LossAttack", "model_logits"]


def model_logits(model: Any, x: Any, batch_size: int = 1024) -> np.ndarray:
    """Evaluate a ``torch.nn.Module`` on ``x`` under ``torch.no_grad`` in eval mode; returns float64 logits.

    The model's training/eval mode is restored afterwards.
    """
    import torch

    xt = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    try:
        ref = next(model.parameters())
        device, dtype = ref.device, ref.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.get_default_dtype()
    if xt.is_floating_point():
        xt = xt.to(dtype)
    was_training = model.training
    model.eval()
    outs = []
    try:
        with torch.no_grad():
            for start in range(0, xt.shape[0], batch_size):
                outs.append(model(xt[start:start + batch_size].to(device)).detach().to("cpu", torch.float64))
    finally:
        model.train(was_training)
    return torch.cat(outs).numpy()


class LossAttack:
    """MIA-L (Yeom et al.): score = -loss. Label 1 = member (or deleted record), 0 = non-member.

    Higher score = more likely member. The attack has no parameters and needs no shadow models;
    ``run`` takes per-record losses that the caller computed on its own model.
    """

    name = "loss"

    @staticmethod
    def score(losses: Any) -> np.ndarray:
        """Membership scores -loss (float64); higher = more likely member."""
        return -float_array("losses", losses, ndim=1)

    def run(self, member_losses: Any, nonmember_losses: Any, target: str = "original",
            calibration_nonmember_losses: Any = None, extra: dict[str, Any] | None = None) -> AttackResult:
        """Attack from per-record losses.

        Args:
            member_losses: losses of records labelled 1 (members / deleted records).
            nonmember_losses: losses of records labelled 0 (never trained on).
            target: name of the attacked model ("original", "unlearned", "retrained", ...).
            calibration_nonmember_losses: optional losses of other non-members for threshold calibration.
        """
        m = float_array("member_losses", member_losses, ndim=1)
        nm = float_array("nonmember_losses", nonmember_losses, ndim=1)
        cal = None
        if calibration_nonmember_losses is not None:
            cal = -float_array("calibration_nonmember_losses", calibration_nonmember_losses, ndim=1)
        return AttackResult(self.name, target, -m, -nm, calibration_nonmember_scores=cal, extra=dict(extra or {}))

    def from_model(self, model: Any, x_members: Any, y_members: Any, x_nonmembers: Any, y_nonmembers: Any,
                   target: str = "original", batch_size: int = 1024) -> AttackResult:
        """Compute cross-entropy losses of a ``torch.nn.Module`` (no_grad, eval mode, float64 logsumexp) and run.

        ``x_members``/``y_members`` are records labelled 1 (members or deleted), the others label 0.
        """
        loss_m = signals.cross_entropy(y_members, logits=model_logits(model, x_members, batch_size))
        loss_nm = signals.cross_entropy(y_nonmembers, logits=model_logits(model, x_nonmembers, batch_size))
        return self.run(loss_m, loss_nm, target=target)
