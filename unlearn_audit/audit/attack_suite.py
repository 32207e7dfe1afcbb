"""The attacks the audit runs against every target model. Each entry maps an attack name (config
``audit.attacks``) to ``fn(ctx, target: Target) -> AttackRun``: the JSON-ready row and the raw per-record scores
(label 1 = forget-set record, 0 = never trained on), always on the same records in the same order, so that paired
tests across models are valid.

Attacks that need shadow models build them once per run and keep them in ``ctx.extra``
(:mod:`unlearn_audit.audit.shadow_models`). When the shadows fail their fit check the attack *refuses*: its rows
carry ``refused: "refused: <why>"`` and the run has no scores, the audit goes on, and the verdict lists the refusal
instead of counting the attack.

Every row: ``auc`` (DeLong), ``tpr_at_fpr`` (thresholds fixed on calibration non-members = the test split, disjoint
from the evaluation non-members = the population split), ``n_members``/``n_nonmembers``/``n_calibration``; shadow
attacks add ``shadows`` (their train/test accuracy next to the target's, their number, the fit check).
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch

from unlearn_audit import stats
from unlearn_audit.audit import measure, shadow_models
from unlearn_audit.audit.context import AuditContext
from unlearn_audit.audit.targets import AttackRun, Target

ATTACK_NAMES = {"loss": "loss (MIA-L)", "lira": "LiRA (online)", "mia_u": "MIA-U"}


def _not_attackable(ctx: AuditContext, w: torch.Tensor) -> str | None:
    """Why a target cannot be attacked (None if it can): non-finite weights or outputs, as a release with an
    astronomically large σ (a vacuous certificate, e.g. a measured ρ_t > 1 compounded over many steps) has."""
    with torch.no_grad():
        if not bool(torch.isfinite(w).all()):
            return ("the model's weights are not finite (a release whose noise σ exceeds the float range: the "
                    "certificate is vacuous), so there is nothing to attack")
        out = ctx.model.logits(w, ctx.x_test[:256].to(w.dtype))
        if not bool(torch.isfinite(out).all()):
            return ("the model's outputs are not finite (weights of order "
                    f"{float(w.abs().max()):.3g}: a release whose noise drowns the model; the certificate is "
                    "vacuous), so there is nothing to attack")
    return None


def run_loss_attack(ctx: AuditContext, t: Target) -> AttackRun:
    """MIA-L: members = forget set, non-members = population, calibration non-members = test split."""
    w, target, state = t.weights, t.method, t.key[1]
    why = _not_attackable(ctx, w)
    if why:
        return _refused_row(ATTACK_NAMES["loss"], target, state, why)
    return measure.loss_attack(ctx.model, w, ctx.forget, (ctx.x_pop, ctx.y_pop), (ctx.x_test, ctx.y_test),
                               target=target, state=state, alpha=ctx.cfg.audit.alpha)


def _refused_row(attack: str, target: str, state: str, why: str, **extra) -> AttackRun:
    return AttackRun({"attack": attack, "target": target, "state": state, "refused": f"refused: {why}", **extra})


def run_lira(ctx: AuditContext, t: Target) -> AttackRun:
    """Online LiRA (Carlini et al.): members = forget set, non-members = population, calibration = test split.

    The shadows (trained once per run) saw each of these records in exactly half of the models; the target's
    logit-scaled confidence is compared with the record's IN and OUT Gaussians.
    """
    w, target, state = t.weights, t.method, t.key[1]
    sh = shadow_models.lira_shadows(ctx)
    name = ATTACK_NAMES["lira"]
    if sh.refused:
        return _refused_row(name, target, state, sh.refused, shadows=sh.summary)
    why = _not_attackable(ctx, w)
    if why:
        return _refused_row(name, target, state, why, shadows=sh.summary)
    members, nonmembers, calibration, info = shadow_models.lira_scores(ctx, sh, w)
    return measure.attack_run(name, target, state, members, nonmembers, calibration, ctx.cfg.audit.alpha,
                              shadows=sh.summary,
                              lira={"variant": "online", "fixed_variance": info["fixed_variance"],
                      "mean_in_per_record": info["mean_in_per_record"],
                      "mean_out_per_record": info["mean_out_per_record"],
                      "fallback_in": info["fallback_in"], "fallback_out": info["fallback_out"]})


def run_mia_u(ctx: AuditContext, t: Target) -> AttackRun:
    """MIA-U (Chen et al.) on the pair (original model, target model): members = forget set (deleted), non-members
    = population; the attack was fitted on shadow pairs unlearned with the target's unlearner (released with the
    target's σ when the target is a noisy release) and never scores those shadow records.
    """
    w, target, state = t.weights, t.method, t.key[1]
    sh = shadow_models.mia_u_shadows(ctx)
    a = ctx.cfg.audit
    name = f"{ATTACK_NAMES['mia_u']} ({a.mia_u_feature})"
    if sh.refused:
        return _refused_row(name, target, state, sh.refused, shadows=sh.summary)
    why = _not_attackable(ctx, w)
    if why:
        return _refused_row(name, target, state, why, shadows=sh.summary)
    sigma = t.sigma
    attack = sh.attack(ctx, sigma)
    pool = shadow_models.audit_pool(ctx)
    forget = np.asarray(ctx.forget_positions, dtype=np.int64)
    query = np.concatenate([forget, pool.population])
    labels = np.concatenate([np.ones(len(forget), np.int64), np.zeros(len(pool.population), np.int64)])
    p_o, p_t = sh.posteriors(ctx, ctx.w_original, query), sh.posteriors(ctx, w, query)
    res = attack.run(p_o, p_t, labels, target=target, ids=query)       # refuses shadow records (ids = positions)
    calibration = attack.score(sh.posteriors(ctx, ctx.w_original, pool.test), sh.posteriors(ctx, w, pool.test),
                               ids=pool.test)
    base = attack.original_only_.score(p_o, ids=query)
    notes = []
    if target not in ("hfocu", "original", "retrain"):
        notes.append(f"the shadows were unlearned with HF-OCU, not with {target}: the attack learned what an HF-OCU "
                     "deletion looks like")
    if np.array_equal(p_o, p_t):
        notes.append("this model's posteriors equal the original model's (p_o = p_u): "
                     + ("the difference feature is identically 0 and every record gets the same score, so the AUC "
                        "is 0.5 by construction; MIA-U measures what unlearning changed, not membership"
                        if a.mia_u_feature.endswith("diff") or a.mia_u_feature == "l2" else
                        "the attack sees only the original model's posteriors"))
    return measure.attack_run(name, target, state, res.member_scores, res.nonmember_scores, calibration, a.alpha,
                shadows={**sh.summary, "shadow_noise_sigma": sigma, "n_shadow_pairs": attack.n_shadow_pairs_,
                         "n_train_rows": attack.n_train_},
                mia_u={"feature": a.mia_u_feature, "classifier": a.mia_u_classifier,
                       "degcount": res.extra["degcount"], "degrate": res.extra["degrate"],
                       "original_only": {"feature": attack.original_only_.feature,
                                         "auc": stats.auc_delong(base[labels == 1], base[labels == 0],
                                                                 alpha=a.alpha).to_dict()},
                       "notes": notes})


ATTACKS: dict[str, Callable[[AuditContext, Target], AttackRun]] = {
    "loss": run_loss_attack, "lira": run_lira, "mia_u": run_mia_u}


def list_refusals(verdict: dict, runs: Iterable[AttackRun]) -> dict:
    """Add the refused attacks to a verdict (they do not count towards it) so that it lists every attack."""
    refused: dict[str, str] = {}
    for run in runs:
        if run.refused:
            refused.setdefault(run.attack, run.refused)
    verdict["refused"] = [{"attack": k, "reason": v} for k, v in refused.items()]
    verdict.setdefault("per_attack", [])
    verdict["per_attack"] += [{"attack": k, "decision": "refused"} for k in refused]
    verdict.setdefault("notes", [])
    verdict["notes"] += [f"{k} did not report and is not counted in the verdict ({v})" for k, v in refused.items()]
    return verdict
