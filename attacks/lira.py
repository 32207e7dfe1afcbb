"""LiRA, the likelihood-ratio attack (Carlini et al., IEEE S&P 2022), from shadow-model confidences.

Label convention: 1 = member, 0 = non-member; higher score = more likely member.

Inputs are logit-scaled confidences c = log p_y - log sum_{y' != y} p_{y'} (see
:func:`attacks.signals.logit_scaled_confidence`): ``shadow_conf`` (k, m) of k shadow models on m query
records, ``keep`` (k, m) bool saying which shadows trained on which record (True = IN), and the target
model's ``target_conf`` (m,). Per record, Gaussians are fitted to its IN and OUT shadow confidences:

* online:  score = log N(c; mu_in, sigma_in) - log N(c; mu_out, sigma_out)
* offline: score = log Phi((c - mu_out) / sigma_out) = log P_OUT(C <= c), a one-sided test against the
  OUT Gaussian: the smaller the OUT survival P_OUT(C > c), the closer the score is to 0 from below
  (= more likely member). Computed with ``norm.logcdf``, so it stays finite far in the tails.

``fixed_variance=True`` replaces the per-record sigmas by one global sigma_in and one global sigma_out
(the pooled standard deviation of the per-record residuals), which Carlini et al. recommend when there
are few shadows. Records with fewer than ``min_shadows`` IN (or OUT) shadows cannot be fitted: they
fall back to the global IN (OUT) fit -- the mean of all IN (OUT) confidences and the global sigma --
and how many did so is reported in ``extra``. Every sigma is floored at ``min_std``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import norm

from ._validation import float_array, membership_labels, to_numpy
from .errors import InvalidInputError
from .results import AttackResult

__all__ = ["LiRA", "draw_keep_masks", "load_keep_masks"]


def draw_keep_masks(n_shadows: int, n_records: int, seed: int, path: str | os.PathLike[str] | None = None
                    ) -> np.ndarray:
    """Keep masks (n_shadows, n_records) bool: each shadow trains on a random half of the pool.

    Balanced as in Carlini et al.: every record is IN for exactly ``n_shadows // 2`` shadows (chosen at
    random per record), so each shadow keeps about half of the records and every record has IN and OUT
    fits. Deterministic in ``seed``. With ``path``, the masks are also saved there as ``.npy``
    (reload with :func:`load_keep_masks`; keep them: they define which shadow saw which record).
    """
    if n_shadows < 2 or n_records < 1:
        raise InvalidInputError(f"n_shadows >= 2 and n_records >= 1 required, got {n_shadows}, {n_records}")
    rng = np.random.default_rng([seed, 0x11A])
    order = rng.random((n_shadows, n_records)).argsort(axis=0)
    keep = order < n_shadows // 2
    if path is not None:
        np.save(Path(path), keep, allow_pickle=False)
    return keep


def load_keep_masks(path: str | os.PathLike[str]) -> np.ndarray:
    """Load keep masks saved by :func:`draw_keep_masks` (no pickle)."""
    keep = np.load(Path(path), allow_pickle=False)
    if keep.dtype != bool or keep.ndim != 2:
        raise InvalidInputError(f"{path}: expected a 2-d bool keep-mask array, got {keep.dtype} {keep.shape}")
    return keep


class LiRA:
    """Likelihood-ratio membership attack. Label 1 = member, 0 = non-member; higher score = member.

    Args:
        mode: ``"online"`` (IN and OUT Gaussians; needs shadows trained on the query records) or
            ``"offline"`` (OUT Gaussian only).
        fixed_variance: one global sigma per IN/OUT instead of per-record sigmas.
        min_shadows: fewest IN (OUT) shadows for a per-record fit; records with fewer use the global fit.
        min_std: floor on every sigma (avoids infinite scores when all shadows agree exactly).
    """

    def __init__(self, mode: str = "online", fixed_variance: bool = False, min_shadows: int = 2,
                 min_std: float = 1e-3):
        if mode not in ("online", "offline"):
            raise InvalidInputError(f"mode: expected 'online' or 'offline', got {mode!r}")
        if min_shadows < 1:
            raise InvalidInputError(f"min_shadows: expected >= 1, got {min_shadows}")
        if not min_std > 0:
            raise InvalidInputError(f"min_std: expected > 0, got {min_std}")
        self.mode = mode
        self.fixed_variance = bool(fixed_variance)
        self.min_shadows = int(min_shadows)
        self.min_std = float(min_std)

    @property
    def name(self) -> str:
        return f"lira-{self.mode}" + ("-fixedvar" if self.fixed_variance else "")

    def _fit_side(self, conf: np.ndarray, sel: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Per-record (mean, std) of conf[sel] along axis 0, with the global fallback. Returns fallbacks."""
        count = sel.sum(axis=0)
        if count.sum() == 0:
            raise InvalidInputError("keep: no shadow confidences on this side (all IN or all OUT)")
        vals = np.where(sel, conf, 0.0)
        mean = vals.sum(axis=0) / np.maximum(count, 1)
        resid2 = np.where(sel, (conf - mean[None, :]) ** 2, 0.0)
        ok = count >= self.min_shadows
        # global fit: pooled mean of all confidences on this side, pooled residual std of the fitted records
        g_mean = float(vals.sum() / count.sum())
        if ok.any() and (count[ok] - 1).sum() > 0:
            g_std = float(np.sqrt(resid2[:, ok].sum() / max((count[ok] - 1).sum(), 1)))
        else:
            g_std = float(np.sqrt(np.where(sel, (conf - g_mean) ** 2, 0.0).sum() / max(count.sum() - 1, 1)))
        if self.fixed_variance:
            std = np.full(mean.shape, g_std)
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                std = np.sqrt(resid2.sum(axis=0) / np.maximum(count - 1, 1))
            std = np.where(count >= max(self.min_shadows, 2), std, g_std)
        mean = np.where(ok, mean, g_mean)
        std = np.maximum(std, self.min_std)
        return mean, std, int((~ok).sum())

    def score(self, shadow_conf: Any, keep: Any, target_conf: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """Membership scores (m,) float64 for the target's records (higher = member) and fit diagnostics."""
        sc = float_array("shadow_conf", shadow_conf, ndim=2)
        k, m = sc.shape
        kp = to_numpy(keep)
        if kp.dtype != bool and np.issubdtype(kp.dtype, np.integer) and np.isin(kp, (0, 1)).all():
            kp = kp.astype(bool)
        if kp.dtype != bool or kp.shape != (k, m):
            raise InvalidInputError(f"keep: expected a bool array of shape {(k, m)}, got {kp.dtype} {kp.shape}")
        tc = float_array("target_conf", target_conf, ndim=1)
        if tc.shape[0] != m:
            raise InvalidInputError(f"target_conf: expected {m} values (one per query record), got {tc.shape[0]}")
        mu_out, sd_out, fb_out = self._fit_side(sc, ~kp)
        info: dict[str, Any] = {"n_shadows": k, "mode": self.mode, "fixed_variance": self.fixed_variance,
                                "min_shadows": self.min_shadows, "fallback_out": fb_out,
                                "mean_out_per_record": float((~kp).sum(0).mean())}
        if self.mode == "offline":
            scores = norm.logcdf(tc, loc=mu_out, scale=sd_out)
        else:
            mu_in, sd_in, fb_in = self._fit_side(sc, kp)
            info.update(fallback_in=fb_in, mean_in_per_record=float(kp.sum(0).mean()))
            scores = norm.logpdf(tc, loc=mu_in, scale=sd_in) - norm.logpdf(tc, loc=mu_out, scale=sd_out)
        return np.asarray(scores, dtype=np.float64), info

    def run(self, shadow_conf: Any, keep: Any, target_conf: Any, target_labels: Any, target: str = "original",
            fit_check: Any = None, calibration_nonmember_scores: Any = None) -> AttackResult:
        """Score the target's records and compare with ``target_labels`` (1 = member, 0 = non-member).

        ``fit_check``: an :class:`attacks.shadows.FitCheck`; when given the shadows must pass it or
        :class:`~attacks.errors.ShadowFitError` is raised and nothing is reported.
        """
        summary = fit_check.check() if fit_check is not None else None
        scores, info = self.score(shadow_conf, keep, target_conf)
        y = membership_labels("target_labels", target_labels, n=scores.size)
        if not (y == 1).any() or not (y == 0).any():
            raise InvalidInputError("target_labels: need at least one member (1) and one non-member (0)")
        info["shadow_fit"] = summary if summary is not None else "not checked"
        return AttackResult(self.name, target, scores[y == 1], scores[y == 0],
                            calibration_nonmember_scores=calibration_nonmember_scores, extra=info)
