"""Measurements on trained, unlearned and retrained weights: accuracy, losses, attacks with their statistics."""

from __future__ import annotations

import numpy as np
import torch

from attacks import LossAttack
from unlearn_audit import stats
from unlearn_audit.audit.targets import AttackRun
from unlearn_audit.models import FunctionalModel

TPR_FPRS = (0.01, 0.001, 0.0001)


def per_record_loss(model: FunctionalModel, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Cross-entropy of each record (nats), float64."""
    with torch.no_grad():
        logits = model.logits(w.double(), x.double())
        return torch.nn.functional.cross_entropy(logits, y, reduction="none").numpy()


def attack_run(attack: str, target: str, state: str, members: np.ndarray, nonmembers: np.ndarray,
               calibration: np.ndarray, alpha: float, **extra) -> AttackRun:
    """Scores of one attack on one target → its row (DeLong AUC, TPR at the fixed FPRs with thresholds set on the
    ``calibration`` non-members) and the scores themselves. Labels: members 1 (forget set), non-members 0."""
    auc = stats.auc_delong(members, nonmembers, alpha=alpha)
    tprs = stats.tpr_at_fpr(members, nonmembers, calibration, fpr_targets=TPR_FPRS, alpha=alpha)
    row = {"attack": attack, "target": target, "state": state, "refused": None, "auc": auc.to_dict(),
           "tpr_at_fpr": [t.to_dict() for t in tprs], "n_members": int(np.size(members)),
           "n_nonmembers": int(np.size(nonmembers)), "n_calibration": int(np.size(calibration)), **extra}
    return AttackRun(row, members, nonmembers)


def loss_attack(model: FunctionalModel, w: torch.Tensor, members, nonmembers, calibration, *, target: str,
                state: str, alpha: float) -> AttackRun:
    """MIA-L on one model: members (label 1) = forget set, non-members (label 0) = never-trained records.

    ``calibration`` are other never-trained records, used only to fix the TPR-at-FPR thresholds.
    """
    res = LossAttack().run(per_record_loss(model, w, *members), per_record_loss(model, w, *nonmembers),
                           target=target, calibration_nonmember_losses=per_record_loss(model, w, *calibration))
    assert res.calibration_nonmember_scores is not None        # given above
    return attack_run("loss (MIA-L)", target, state, res.member_scores, res.nonmember_scores,
                      res.calibration_nonmember_scores, alpha)


def equivalence_row(a: AttackRun, b: AttackRun | None = None, *, margin: float, alpha: float, label: str) -> dict:
    """TOST that attack ``a``'s AUC is within ±margin of attack ``b``'s on the same records (paired DeLong), or of
    chance (0.5) when ``b`` is None."""
    am, an = a.scores()
    labels = np.concatenate([np.ones(len(am)), np.zeros(len(an))])
    reference = None if b is None else np.concatenate(b.scores())
    res = stats.tost_auc_equivalence(np.concatenate([am, an]), labels, reference, margin=margin, alpha=alpha)
    out = res.to_dict()
    out.update(comparison=label, attack=a.attack, records_to_decide=stats.records_to_decide(res))
    return out


def weight_space_epsilon(w_unlearned: torch.Tensor, w_retrained: torch.Tensor, sigma: float, delta: float,
                         certified_epsilon: float, *, draws: int, seed: int, alpha: float) -> dict:
    """Empirical ε lower bound for the released pair, by the optimal (likelihood-ratio) distinguisher.

    Draws ``draws`` releases of each model, projects them on the direction of w̄ − w^{−U}, and applies a threshold
    pre-registered on a separate set of draws (the point where the calibration FPR equals the calibration FNR).
    Label 1 = release of the unlearned model, 0 = release of the retrained model. A lower bound above the
    certified ε means the certificate under-states the sensitivity: an implementation bug.
    """
    diff = (w_unlearned - w_retrained).double()
    dist = float(diff.norm())
    if sigma == 0 or dist == 0:
        return {"status": "not applicable", "reason": "sigma or distance is zero", "distance": dist, "sigma": sigma}
    rng = np.random.default_rng(seed)
    # A projection of w + N(0, σ²I) on a unit direction u is ⟨w, u⟩ + N(0, σ²): sample that directly.
    u = diff / dist
    mu1 = float(w_unlearned.double() @ u)
    mu0 = float(w_retrained.double() @ u)
    cal1, cal0 = mu1 + sigma * rng.standard_normal(draws), mu0 + sigma * rng.standard_normal(draws)
    threshold = float(np.median(np.concatenate([cal1, cal0])))
    s1, s0 = mu1 + sigma * rng.standard_normal(draws), mu0 + sigma * rng.standard_normal(draws)
    lb = stats.empirical_epsilon_lower_bound(s1, s0, threshold=threshold, delta=delta, alpha=alpha)
    check = stats.check_against_certified(lb, certified_epsilon, delta)
    return {"status": "computed", "draws_per_side": draws, "distance": dist, "sigma": sigma,
            "lower_bound": lb.to_dict(), "certified_epsilon": certified_epsilon, "violated": check.violated,
            "message": check.message}
