"""The attacks the audit runs against every target model. Each entry maps an attack name (config
``audit.attacks``) to ``fn(ctx, weights, target, state) -> dict`` returning a JSON-ready result with the raw
per-record scores under ``_scores = (member_scores, nonmember_scores)`` (label 1 = forget-set record, 0 = never
trained on), always on the same records in the same order, so that paired tests across models are valid.

Attacks that need shadow models build them once per run and keep them in ``ctx.extra``.
"""

from __future__ import annotations

from typing import Callable

import torch

from unlearn_audit.audit import measure
from unlearn_audit.audit.context import AuditContext


def run_loss_attack(ctx: AuditContext, w: torch.Tensor, target: str, state: str) -> dict:
    """MIA-L: members = forget set, non-members = population, calibration non-members = test split."""
    return measure.loss_attack(ctx.model, w, ctx.forget, (ctx.x_pop, ctx.y_pop), (ctx.x_test, ctx.y_test),
                               target=target, state=state, alpha=ctx.cfg.audit.alpha)


ATTACKS: dict[str, Callable[[AuditContext, torch.Tensor, str, str], dict]] = {"loss": run_loss_attack}
