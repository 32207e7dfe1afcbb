"""Privacy-utility sweep over the noise scale σ (DESIGN §5).

For every σ: the certified ε it buys (analytic Gaussian mechanism, for the run's Δ and δ), test accuracy of the
released HF-OCU and retrained models (same noise draw), and the loss-attack AUC with its DeLong interval.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from unlearn_audit import stats
from unlearn_audit.audit.measure import per_record_loss
from unlearn_audit.certify import analytic_gaussian_epsilon, release
from unlearn_audit.models import FunctionalModel


def privacy_utility_sweep(model: FunctionalModel, w_hf: torch.Tensor, w_re: torch.Tensor, sigmas: list[float],
                          sensitivity: float, delta: float, members, nonmembers, test, *, seed: int, alpha: float,
                          progress: Callable[[int, int], None] | None = None) -> list[dict]:
    points = []
    sigmas = sorted(set(float(s) for s in sigmas))
    for i, sigma in enumerate(sigmas):
        eps = None
        if sigma > 0 and sensitivity > 0:
            try:
                eps = analytic_gaussian_epsilon(sigma, delta, sensitivity)
            except ValueError:
                eps = None                      # σ too small for any finite ε at this δ
        point: dict[str, object] = {"sigma": sigma, "certified_epsilon": eps, "delta": delta}
        for name, w in (("hfocu", w_hf), ("retrain", w_re)):
            wr = release(w, sigma, seed + i) if sigma > 0 else w
            loss_m, loss_n = per_record_loss(model, wr, *members), per_record_loss(model, wr, *nonmembers)
            if not (np.isfinite(loss_m).all() and np.isfinite(loss_n).all()):
                # σ so large that the released weights or outputs leave the float range: nothing to measure.
                point[name] = {"test_accuracy": None, "loss_attack_auc": {"auc": None, "ci_low": None,
                                                                          "ci_high": None},
                               "note": "released model's outputs are not finite at this σ"}
                continue
            auc = stats.auc_delong(-loss_m, -loss_n, alpha=alpha)
            point[name] = {"test_accuracy": model.accuracy(wr, *test), "loss_attack_auc": auc.to_dict()}
        points.append(point)
        if progress:
            progress(i + 1, len(sigmas))
    return points
