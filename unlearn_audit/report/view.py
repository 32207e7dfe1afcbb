"""From results.json to what the report shows: formatted numbers, table rows, and the plain-language findings.

Everything here reads the results defensively (``.get`` with a dash for what is absent), so a report renders for
any number of methods and attacks, for an uncertified primary method (no certificate), and for results written by
older or newer versions of the same schema major version. Escaping is the template's job (Jinja autoescape).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import TypeGuard

from pydantic import ValidationError

from unlearn_audit.schema import Answer, PerExampleSection

DASH = "—"
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


# ------------------------------------------------------------------------------------------------ number formatting
def is_num(x: object) -> TypeGuard[int | float]:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def num(x, digits: int = 4) -> str:
    """Significant-digit formatting; a dash for missing values."""
    if not is_num(x):
        return DASH
    if x == 0:
        return "0"
    if abs(x) >= 1e5 or abs(x) < 1e-3:
        mant, exp = f"{x:.{max(digits - 1, 0)}e}".split("e")
        mant = mant.rstrip("0").rstrip(".") if "." in mant else mant
        power = str(int(exp)).translate(_SUPERSCRIPT)
        return f"10{power}" if mant == "1" else f"{mant}×10{power}"
    if abs(x) >= 10 ** digits:
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def fixed(x, decimals: int = 4, sign: bool = False) -> str:
    if not is_num(x):
        return DASH
    return f"{x:+.{decimals}f}" if sign else f"{x:.{decimals}f}"


def pct(x, decimals: int = 1) -> str:
    return f"{100 * x:.{decimals}f}%" if is_num(x) else DASH


def interval(lo, hi, decimals: int = 3, sign: bool = False) -> str:
    if not (is_num(lo) and is_num(hi)):
        return DASH
    return f"[{fixed(lo, decimals, sign)}, {fixed(hi, decimals, sign)}]"


def ms(seconds) -> str:
    if not is_num(seconds):
        return DASH
    v = 1000 * seconds
    return f"{v:.3g} ms" if v < 1000 else f"{seconds:.3g} s"


def seconds_text(s) -> str:
    if not is_num(s):
        return DASH
    return f"{s:.3g} s" if s < 120 else f"{s / 60:.1f} min"


def nbytes(n) -> str:
    if not is_num(n):
        return DASH
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return DASH                                                    # pragma: no cover


def conf_level(alpha, two_sided: bool = True) -> str:
    """"95%" for α = 0.05 (two-sided); "90%" for the (1 − 2α) TOST interval."""
    if not is_num(alpha):
        return "CI"
    level = 1 - alpha if two_sided else 1 - 2 * alpha
    return f"{100 * level:.4g}%"


def _sentence(text: str) -> str:
    text = str(text).strip().rstrip(".")
    return text[:1].upper() + text[1:] if text else ""


def _get(d, *path, default=None):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


# ------------------------------------------------------------------------------------------------------- the view
def build_view(r: dict) -> dict:
    """The report's content as plain strings and rows (the template only lays it out)."""
    v = r.get("verdict") or {}
    alpha = v.get("alpha", _get(r, "certificate", "alpha"))
    primary = r.get("primary_method") or v.get("method") or DASH
    methods = r.get("methods") or {}
    pm = methods.get(primary) or {}
    cert = r.get("certificate")
    status = str(v.get("status") or "inconclusive")
    view = {
        "status": status,
        "primary": primary,
        "alpha": alpha if is_num(alpha) else DASH,
        "ci_label": conf_level(alpha),
        "tost_label": conf_level(alpha, two_sided=False),
        "margin": num(v.get("margin")),
        "verdict": {"reasons": [str(x) for x in v.get("reasons") or []], "test": v.get("test") or DASH,
                    "n_records": v.get("n_records", DASH), "n_pairs": v.get("n_pairs", DASH),
                    "exit_code": v.get("exit_code", DASH)},
        "header": _header(r),
        "key_facts": _key_facts(r, primary, pm, cert),
        "certificate": _certificate(r, cert, pm, primary) if cert else None,
        "methods": _methods(r),
        "attacks": _attacks(r, alpha),
        "equivalence": _equivalence(r),
        "answers": _answers(v),
        "per_example": _per_example(r),
        "tradeoff": _tradeoff(r),
        "capacity": _capacity(r),
        "latency": _latency(r),
        "compliance": _compliance(r, primary, pm, cert),
        "environment": _environment(r),
    }
    view["findings"] = findings(r)
    view["headline"] = {
        "pass": "The attacks could not tell the released unlearned model apart from a model retrained without the "
                "deleted records (within the equivalence margin).",
        "fail": "The audit found a difference between the unlearned model and a model retrained without the deleted "
                "records, or evidence against the certificate.",
        "inconclusive": "The evidence is not strong enough to decide either way; the reasons below say what would "
                        "decide it.",
    }.get(status, "")
    return view


def _answers(v: dict) -> list[dict]:
    """The verdict's two questions (forgetting, release), each with its status and reasons (read through the
    results schema; a malformed answer is left out)."""
    out = []
    for key in ("forgetting", "release"):
        try:
            a = Answer.model_validate(v.get(key))
        except ValidationError:
            continue
        out.append({"question": a.question, "status": a.status, "reasons": a.reasons})
    return out


def _per_example(r: dict) -> dict | None:
    """Rows of the per-example table: each group (method, do-nothing control, retrain-vs-retrain null) against the
    reference retrains, on the decision signal (logit-scaled confidence); read through the results schema."""
    try:
        pe = PerExampleSection.model_validate(r.get("per_example"))
    except ValidationError:
        return None
    rows = []
    for g in pe.groups:
        s = g.signals.get("confidence") or {}
        eps = s.get("epsilon_lower_bound") or {}
        vs = s.get("vs_null") or {}
        rows.append({"name": g.name, "state": g.state,
                     "sigma": num(g.sigma, 3) if g.state == "released" else DASH,
                     "accuracy": num(g.accuracy_test_mean, 3), "advantage": num(s.get("advantage"), 3),
                     "eps_median": num(eps.get("median"), 3), "eps_max": num(eps.get("max"), 3),
                     "flagged": num(s.get("flagged_fraction"), 3), "ulira": num(s.get("ulira_pooled_auc"), 3),
                     "forgetting_score": num(s.get("forgetting_score"), 3),
                     "above_certified": num(s.get("fraction_above_certified_epsilon"), 3),
                     "vs_null": (f"{vs.get('decision')}: {num(vs.get('difference'), 3)} "
                                 f"[{num(vs.get('ci_low'), 3)}, {num(vs.get('ci_high'), 3)}]") if vs else "null"})
    return {"rows": rows, "n_pairs": pe.n_pairs, "n_records": pe.n_records, "margin": num(pe.margin),
            "protocol": pe.protocol, "notes": pe.notes}


def _header(r: dict) -> dict:
    d, m, run, tool = r.get("data") or {}, r.get("model") or {}, r.get("run") or {}, r.get("tool") or {}
    fs = r.get("forget_set") or {}
    return {"dataset": d.get("dataset", DASH), "model": m.get("description") or m.get("kind") or DASH,
            "started": run.get("started", DASH), "finished": run.get("finished", DASH),
            "seconds": seconds_text(run.get("seconds")), "seed": run.get("seed", DASH),
            "tool": f"{tool.get('name', 'unlearn-audit')} {tool.get('version', '')}".strip(),
            "config_digest": str(run.get("config_digest") or DASH),
            "schema_version": str(r.get("schema_version", DASH)),
            "n_forget": fs.get("n", DASH), "n_requests": len(fs.get("requests") or []),
            "n_train": d.get("n_train", DASH), "n_test": d.get("n_test", DASH),
            "n_population": d.get("n_population", DASH), "n_classes": d.get("n_classes", DASH)}


def _primary_rows(r: dict, primary: str) -> list[dict]:
    eq = r.get("equivalence") or []
    released = [e for e in eq if e.get("method") == primary and e.get("state") == "released"]
    return released or [e for e in eq if e.get("method") == primary]


def _key_facts(r: dict, primary: str, pm: dict, cert: dict | None) -> list[tuple[str, str]]:
    fs = r.get("forget_set") or {}
    facts = [("Records deleted", f"{fs.get('n', DASH)} of {_get(r, 'data', 'n_train', default=DASH)} training "
                                 f"records, in {len(fs.get('requests') or [])} requests"),
             ("Unlearning method", f"{primary}: {pm.get('description', DASH)}")]
    if cert:
        facts.append(("Certificate", f"(ε = {num(cert.get('epsilon'))}, δ = {num(cert.get('delta'))}), "
                                     f"noise σ = {num(cert.get('sigma'))}"))
    else:
        facts.append(("Certificate", f"none: {primary} is not a certified method"))
    for e in _primary_rows(r, primary):
        facts.append((f"Attack AUC, {e.get('attack', DASH)}",
                      f"unlearned {fixed(e.get('auc'), 3)} vs retrained {fixed(e.get('reference_auc'), 3)} "
                      f"({e.get('state', '')}); difference {fixed(e.get('difference'), 3, True)}, "
                      f"{conf_level(e.get('alpha'), False)} CI {interval(e.get('ci_low'), e.get('ci_high'), 3, True)}"
                      f" → {e.get('decision', DASH)}"))
    acc, rel = _get(pm, "accuracy", "test"), _get(pm, "accuracy_released", "test")
    if is_num(rel):
        facts.append(("Test accuracy", f"{pct(rel)} released (with noise); {pct(acc)} without noise"))
    elif is_num(acc):
        facts.append(("Test accuracy", pct(acc)))
    lat = pm.get("latency_seconds") or {}
    if is_num(lat.get("p50")):
        retrain_s = _get(r, "methods", "retrain", "seconds_per_request")
        facts.append(("Deletion latency", f"median {ms(lat['p50'])}, 99th percentile {ms(lat.get('p99'))} per "
                                          f"request; exact retraining took {seconds_text(retrain_s)}"))
    elif is_num(pm.get("seconds_per_request")):
        facts.append(("Deletion latency", f"{ms(pm['seconds_per_request'])} per request"))
    return facts


def _certificate(r: dict, cert: dict, pm: dict, primary: str) -> dict:
    dist = pm.get("distance_to_retrain")
    delta_s = cert.get("sensitivity")
    ratio = (delta_s / dist) if is_num(delta_s) and is_num(dist) and dist > 0 else None
    constants = [{"name": k, "value": num(c.get("value"), 6), "source": c.get("source", DASH), "how": c.get("how", "")}
                 for k, c in (cert.get("constants") or {}).items() if isinstance(c, dict)]
    ee = r.get("empirical_epsilon") or {}
    lb = _get(ee, "lower_bound", "epsilon_lower_bound")
    return {
        "epsilon": num(cert.get("epsilon")), "delta": num(cert.get("delta")),
        "mechanism": cert.get("mechanism", DASH), "sigma": num(cert.get("sigma"), 5),
        "noise_seed": cert.get("noise_seed", DASH), "sensitivity": num(delta_s, 5),
        "bound": cert.get("bound", DASH), "constants_kind": cert.get("constants_kind", ""),
        "constants": constants, "n_forget": cert.get("n_forget", DASH), "reference": cert.get("reference", DASH),
        "forget_digest": str(cert.get("forget_digest") or DASH), "schedule_digest": str(cert.get("schedule_digest")
                                                                                          or DASH),
        "distance": num(dist), "ratio": num(ratio, 3) if ratio else None,
        "utility": utility_statement(r, primary),
        "empirical": {"status": ee.get("status", DASH), "value": num(lb, 3),
                      "message": _sentence(ee.get("message") or ee.get("reason") or ""),
                      "draws": ee.get("draws_per_side"),
                      "violated": bool(ee.get("violated"))},
    }


def _capacity(r: dict) -> dict | None:
    """The deletion-capacity curve (results["capacity"]): how many deletions keep a certified release within the
    utility budget."""
    c = r.get("capacity")
    if not isinstance(c, dict) or not c.get("points"):
        return None
    pts = [{"k": p.get("n_deleted"), "delta": num(p.get("sensitivity"), 4), "sigma": num(p.get("sigma"), 4),
            "clean": num(p.get("noiseless_accuracy"), 3), "released": num(p.get("released_accuracy"), 3),
            "ok": bool(p.get("within_budget")), "reason": p.get("reason", "")} for p in c["points"]]
    more = "at least " if c.get("exhausted_stream") else ""
    return {"capacity": f"{more}{c.get('capacity')}", "budget": num(100 * c.get("max_accuracy_loss", float("nan")), 3),
            "epsilon": num(c.get("epsilon")), "delta": num(c.get("delta")), "stream": c.get("stream", DASH),
            "sigma_budget": num(c.get("sigma_budget"), 4), "points": pts}


def utility_statement(r: dict, primary: str) -> dict | None:
    """What the certified noise costs in test accuracy, in plain words, with a pointer to the trade-off table.

    Returns ``{"level": "ok" | "warn" | "bad", "text": ...}``; ``None`` when there is no released accuracy."""
    pm = (r.get("methods") or {}).get(primary) or {}
    acc, rel = _get(pm, "accuracy", "test"), _get(pm, "accuracy_released", "test")
    cert = r.get("certificate") or {}
    if not (is_num(acc) and is_num(rel)):
        return None
    k = _get(r, "data", "n_classes")
    chance = 1 / k if is_num(k) and k > 0 else None
    dist, sens, sigma = pm.get("distance_to_retrain"), cert.get("sensitivity"), cert.get("sigma")
    why = ""
    if is_num(dist) and is_num(sens) and dist > 0:
        why = (f" The noise is calibrated to the certified sensitivity bound Δ = {num(sens)}, which is "
               f"{num(sens / dist, 3)} times the actual distance of the noiseless unlearned weights to exact "
               f"retraining ({num(dist)}): σ = {num(sigma)} follows from Δ, not from the actual distance.")
    sweep = _sweep_hint(r, primary, acc)
    if acc - rel <= 0.01:
        return {"level": "ok", "text": f"The certified noise costs little utility: test accuracy {pct(rel)} released "
                                       f"against {pct(acc)} without noise."}
    if chance is not None and rel <= chance + 0.25 * (acc - chance):
        return {"level": "bad", "text": f"The certified noise destroys the model's utility: the released model's "
                                        f"test accuracy is {pct(rel)}, against {pct(acc)} without noise (chance level "
                                        f"for {k} classes: {pct(chance)}).{why}{sweep}"}
    return {"level": "warn", "text": f"The certified noise reduces test accuracy from {pct(acc)} (no noise) to "
                                     f"{pct(rel)} (released).{why}{sweep}"}


def _sweep_hint(r: dict, primary: str, acc: float) -> str:
    pts = [p for p in (r.get("tradeoff") or []) if isinstance(p.get(primary), dict)]
    if not pts:
        return " The privacy-utility section shows the trade-off."
    keep = [p for p in pts if is_num(p.get("sigma")) and p["sigma"] > 0
            and is_num(p[primary].get("test_accuracy")) and p[primary]["test_accuracy"] >= acc - 0.01]
    if not keep:
        return (" The privacy-utility table (section 5) shows the trade-off; none of its noise levels keeps test "
                "accuracy within 1 point of the noiseless model.")
    best = max(keep, key=lambda p: p["sigma"])
    eps = best.get("certified_epsilon")
    if is_num(eps):
        eps_text = f"the certified ε would be {num(eps, 3)} (at δ = {num(best.get('delta'))})"
        if eps > 10:
            eps_text += ", which is no meaningful privacy guarantee"
    else:
        eps_text = "no finite ε can be certified"
    return (f" The privacy-utility table (section 5) shows the trade-off: the largest noise in the sweep that keeps "
            f"test accuracy within 1 point of the noiseless model is σ = {num(best['sigma'])} "
            f"(accuracy {pct(best[primary]['test_accuracy'])}); at that σ {eps_text}.")


def _methods(r: dict) -> list[dict]:
    rows = []
    orig = _get(r, "methods", "original", "distance_to_retrain")
    for name, m in (r.get("methods") or {}).items():
        if not isinstance(m, dict):
            continue
        d = m.get("distance_to_retrain")
        closer = (orig / d) if is_num(orig) and is_num(d) and d > 0 and name != "original" else None
        acc, rel = m.get("accuracy") or {}, m.get("accuracy_released") or {}
        rows.append({"name": name, "description": m.get("description", ""), "certified": bool(m.get("certified")),
                     "distance": num(d), "closer": f"{num(closer, 3)}×" if closer else DASH,
                     "test": pct(acc.get("test")), "forget": pct(acc.get("forget")), "retain": pct(acc.get("retain")),
                     "test_released": pct(rel.get("test")), "sigma": num(m.get("sigma")) if m.get("sigma") else DASH,
                     "curvature": m.get("curvature")})
    return rows


def _tpr_cell(t: dict) -> dict:
    if t.get("resolvable"):
        return {"ok": True, "text": fixed(t.get("tpr"), 3),
                "ci": interval(t.get("tpr_ci_low"), t.get("tpr_ci_high"), 3),
                "fpr": f"realised FPR {fixed(t.get('realised_fpr'), 4)}"}
    reason = str(t.get("reason") or "too few calibration records")
    return {"ok": False, "text": "not resolvable", "reason": reason.removeprefix("not resolvable: ")}


def _shadow_text(sh: object) -> str:
    """One line on an attack's shadow models: how many, how well they fit, next to the target's accuracy."""
    if not isinstance(sh, dict) or not sh:
        return ""
    parts = []
    if sh.get("n_shadows") is not None:
        parts.append(f"{sh['n_shadows']} shadow models")
    if is_num(sh.get("shadow_train_acc_mean")):
        parts.append(f"mean train accuracy {pct(sh['shadow_train_acc_mean'])}"
                     + (f" (lowest {pct(sh['shadow_train_acc_min'])})" if is_num(sh.get("shadow_train_acc_min"))
                        else "")
                     + (f", mean test accuracy {pct(sh['shadow_test_acc_mean'])}"
                        if is_num(sh.get("shadow_test_acc_mean")) else ""))
    if is_num(sh.get("target_train_acc")):
        parts.append(f"target model: train {pct(sh['target_train_acc'])}, test {pct(sh.get('target_test_acc'))}")
    if sh.get("fit_check"):
        parts.append(f"fit check {sh['fit_check']}")
    if sh.get("unlearner"):
        parts.append(f"shadows unlearned with {sh['unlearner']}")
    if sh.get("not_replicated"):
        parts.append("not replicated in the shadows: " + ", ".join(str(x) for x in sh["not_replicated"]))
    return "; ".join(parts)


def _row_details(a: dict) -> str:
    """Attack-specific numbers worth a line under the row (MIA-U's DegCount/DegRate, notes, other scalars)."""
    bits = []
    mia_u = a.get("mia_u")
    mu = mia_u if isinstance(mia_u, dict) else {}
    if is_num(mu.get("degcount")):
        bits.append(f"DegCount {fixed(mu['degcount'], 3)}")
    if is_num(mu.get("degrate")):
        bits.append(f"DegRate {fixed(mu['degrate'], 3, True)}")
    base = _get(mu, "original_only", "auc", "auc")
    if is_num(base):
        bits.append(f"original-posterior-only attack AUC {fixed(base, 3)}")
    skip = {"attack", "target", "state", "auc", "tpr_at_fpr", "n_members", "n_nonmembers", "n_calibration",
            "attack_key", "refused"}
    for k, v in a.items():
        if k not in skip and (is_num(v) or (isinstance(v, str) and len(v) < 200)):
            bits.append(f"{k} = {num(v) if is_num(v) else v}")
    notes = [str(n) for n in (mu.get("notes") or [])] + [str(n) for n in (_get(a, "auc", "notes") or [])]
    return "; ".join(bits + notes)


def _attacks(r: dict, alpha) -> list[dict]:
    """One group per attack (in first-seen order), each with its rows and its TPR@FPR columns."""
    groups: OrderedDict[str, dict] = OrderedDict()
    for a in r.get("attacks") or []:
        if not isinstance(a, dict):
            continue
        name = str(a.get("attack", "attack"))
        g = groups.setdefault(name, {"name": name, "rows": [], "fprs": [], "reasons": [], "shadows": "",
                                     "refused": None})
        if not g["shadows"]:
            g["shadows"] = _shadow_text(a.get("shadows"))
        if a.get("refused"):
            g["refused"] = g["refused"] or str(a["refused"])
            g["rows"].append({"target": a.get("target", DASH), "state": a.get("state", DASH),
                              "refused": str(a["refused"]), "tprs": {}, "extra": ""})
            continue
        tprs = {}
        for t in a.get("tpr_at_fpr") or []:
            f = t.get("fpr_target")
            if f not in g["fprs"]:
                g["fprs"].append(f)
            cell = _tpr_cell(t)
            if not cell["ok"]:
                if cell["reason"] not in g["reasons"]:
                    g["reasons"].append(cell["reason"])
                cell["mark"] = g["reasons"].index(cell["reason"]) + 1
            tprs[f] = cell
        auc = a.get("auc") or {}
        g["rows"].append({"target": a.get("target", DASH), "state": a.get("state", DASH), "refused": None,
                          "auc": fixed(auc.get("auc"), 4), "ci": interval(auc.get("ci_low"), auc.get("ci_high"), 4),
                          "n": f"{a.get('n_members', DASH)} / {a.get('n_nonmembers', DASH)}",
                          "n_cal": a.get("n_calibration", DASH), "tprs": tprs, "extra": _row_details(a)})
    for g in groups.values():
        g["fpr_labels"] = [f"{100 * f:.3g}%" if is_num(f) else str(f) for f in g["fprs"]]
        g["n_cal"] = next((row["n_cal"] for row in g["rows"] if row.get("n_cal") is not None), DASH)
    return list(groups.values())


def _equivalence(r: dict) -> list[dict]:
    rows = []
    for e in r.get("equivalence") or []:
        rows.append({"attack": e.get("attack", DASH), "comparison": e.get("comparison", DASH),
                     "auc": fixed(e.get("auc"), 4), "reference": fixed(e.get("reference_auc"), 4),
                     "difference": fixed(e.get("difference"), 4, True),
                     "ci": interval(e.get("ci_low"), e.get("ci_high"), 4, True),
                     "p": num(e.get("pvalue"), 3), "decision": str(e.get("decision", DASH)),
                     "direction": e.get("direction"), "margin": num(e.get("margin")),
                     "records_to_decide": e.get("records_to_decide") if e.get("decision") == "inconclusive" else None,
                     "notes": list(e.get("notes") or []), "control": e.get("method") == "original"})
    return rows


def _tradeoff(r: dict) -> dict:
    pts = [p for p in (r.get("tradeoff") or []) if isinstance(p, dict)]
    models = [k for k, v in pts[0].items() if isinstance(v, dict) and "test_accuracy" in v] if pts else []
    cert_sigma = _get(r, "certificate", "sigma")
    rows = []
    for p in pts:
        eps = p.get("certified_epsilon")
        if is_num(eps):
            eps_text = num(eps, 3)
        elif p.get("sigma") == 0:
            eps_text = "none (no noise)"
        else:
            eps_text = "not computable (ε too large)"
        cells = []
        for name in models:
            d = p.get(name) or {}
            auc = d.get("loss_attack_auc") or {}
            cells.append({"acc": pct(d.get("test_accuracy")), "auc": fixed(auc.get("auc"), 3),
                          "ci": interval(auc.get("ci_low"), auc.get("ci_high"), 3)})
        rows.append({"sigma": num(p.get("sigma")), "epsilon": eps_text, "cells": cells,
                     "certified": is_num(cert_sigma) and is_num(p.get("sigma"))
                     and math.isclose(p["sigma"], cert_sigma, rel_tol=1e-9)})
    return {"models": models, "rows": rows, "delta": num(pts[0].get("delta")) if pts else DASH}


def _latency(r: dict) -> list[dict]:
    rows = []
    for name, m in (r.get("methods") or {}).items():
        if not isinstance(m, dict) or name == "original":
            continue
        lat = m.get("latency_seconds") or {}
        rows.append({"name": name, "per_request": ms(m.get("seconds_per_request")) if name != "retrain"
                     else seconds_text(m.get("seconds_per_request")),
                     "p50": ms(lat.get("p50")), "p99": ms(lat.get("p99")), "n": lat.get("n_requests", DASH),
                     "precompute": seconds_text(m.get("precompute_seconds")) if m.get("precompute_seconds") else DASH,
                     "storage": nbytes(m.get("storage_bytes")) if m.get("storage_bytes") else DASH,
                     "seconds": m.get("seconds_per_request")})
    return rows


MAX_IDS_SHOWN = 12


def _compliance(r: dict, primary: str, pm: dict, cert: dict | None) -> dict:
    reqs = []
    for q in _get(r, "forget_set", "requests", default=[]) or []:
        ids = [str(i) for i in q.get("hashed_record_ids") or []]
        reqs.append({"id": q.get("request_id", DASH), "n": q.get("n_records", len(ids)),
                     "ids": ids[:MAX_IDS_SHOWN], "more": max(0, len(ids) - MAX_IDS_SHOWN),
                     "at": str(q.get("applied_at", DASH)).replace("T", " "), "latency": ms(q.get("seconds")),
                     "before": str(q.get("state_hash_before") or "")[:8],
                     "after": str(q.get("state_hash_after") or "")[:8]})
    v = r.get("verdict") or {}
    return {"requests": reqs, "verdict": v, "per_attack": v.get("per_attack") or [], "control": v.get("control") or [],
            "method_text": f"{primary}" + (f" ({pm['curvature']}, order {pm.get('order', DASH)})"
                                           if pm.get("curvature") else ""),
            "disclaimer": r.get("disclaimer") or "Technical evidence about a machine-unlearning procedure; not "
                                                 "legal advice.",
            "source": _get(r, "forget_set", "source", default=DASH)}


def _environment(r: dict) -> dict:
    env = r.get("environment") or {}
    pk = env.get("packages") or {}
    return {"python": env.get("python", DASH), "platform": env.get("platform", DASH),
            "git": env.get("git_revision") or "unknown (not a git checkout)",
            "packages": [(k, v or "not installed") for k, v in pk.items()],
            "data_digest": str(_get(r, "data", "data_digest", default=DASH)),
            "model_hash": str(_get(r, "model", "weights_hash", default=DASH)),
            "schedule_digest": str(_get(r, "training", "schedule_digest", default=DASH)),
            "user_code": _user_code(r)}


def _user_code(r: dict) -> list[dict]:
    """The user code and files the run imported or read (model factory, plugin methods, external weights)."""
    out = []
    plug = _get(r, "model", "plugin", default=None)
    if isinstance(plug, dict):
        out.append({"role": "model factory", **{k: str(plug.get(k) or DASH) for k in ("spec", "file", "sha256",
                                                                                      "version")}})
    for name, m in (r.get("methods") or {}).items():
        if isinstance(m, dict) and isinstance(m.get("plugin"), dict):
            p = m["plugin"]
            out.append({"role": "unlearning method", **{k: str(p.get(k) or DASH) for k in ("spec", "file", "sha256",
                                                                                          "version")}})
        if isinstance(m, dict) and isinstance(m.get("external"), dict):
            e = m["external"]
            out.append({"role": "unlearned weights", "spec": name, "file": str(e.get("file") or DASH),
                        "sha256": str(e.get("sha256") or DASH), "version": "—"})
    return out


# ------------------------------------------------------------------------------------------------------- findings
def findings(r: dict) -> list[dict]:
    """Plain-language statements the summary must carry: ``{"level": "alarm" | "warn" | "info", "text": ...}``."""
    out = []
    primary = r.get("primary_method") or _get(r, "verdict", "method")
    ee = r.get("empirical_epsilon") or {}
    if ee.get("violated"):
        out.append({"level": "alarm", "text": "IMPLEMENTATION FAILURE: the empirical ε lower bound exceeds the "
                                              f"certified ε. {ee.get('message', '')} The certificate cannot be "
                                              "trusted for this run."})
    if r.get("certificate") is None:
        out.append({"level": "warn", "text": f"The primary method ({primary}) is not certified: there is no "
                                             "(ε, δ) guarantee; the verdict rests on the attacks alone."})
    u = utility_statement(r, primary) if primary else None
    if u and u["level"] in ("bad", "warn"):
        pm = (r.get("methods") or {}).get(primary) or {}
        acc, rel = _get(pm, "accuracy", "test"), _get(pm, "accuracy_released", "test")
        verb = "destroys" if u["level"] == "bad" else "reduces"
        out.append({"level": "warn", "text": f"The certified noise {verb} the model's utility: released test accuracy "
                                             f"{pct(rel)} against {pct(acc)} without noise. Section 1 of the report "
                                             "explains why "
                                             "(the sensitivity bound is loose) and section 5 shows the "
                                             "privacy-utility trade-off."})
    pm = _get(r, "methods", primary, default={}) or {}
    sigma, dist = pm.get("sigma"), pm.get("distance_to_retrain")
    if is_num(sigma) and is_num(dist) and sigma > 0 and sigma >= 10 * dist:
        exact = [str(e.get("attack")) for e in _primary_rows(r, primary)
                 if e.get("state") == "released" and e.get("se") == 0]
        noiseless = [e for e in (r.get("equivalence") or []) if e.get("method") == primary
                     and e.get("state") == "noiseless"]
        extra = "".join(f" Without noise ({e.get('attack')}), {primary}'s internal state against exact retraining is "
                        f"{e.get('decision')} (difference {fixed(e.get('difference'), 3, True)}, "
                        f"{conf_level(e.get('alpha'), False)} CI "
                        f"{interval(e.get('ci_low'), e.get('ci_high'), 3, True)})."
                        for e in noiseless)
        out.append({"level": "info", "text": f"In the released models the noise dominates: σ = {num(sigma)} per "
                                             "weight, "
                                             f"against a distance of {num(dist)} between the noiseless unlearned and "
                                             "retrained weights. The attacks therefore score the two releases almost "
                                             "identically"
                                             + (f" ({', '.join(exact)}: exactly identically, standard error of the "
                                                "difference 0)" if exact else "")
                                             + "; equivalence on the released models reflects the noise level, not "
                                               f"how close the unlearning is.{extra}"})
    for n in _get(r, "verdict", "notes", default=[]) or []:
        out.append({"level": "info", "text": _sentence(n) + "."})
    pm = _get(r, "methods", primary, default={}) or {}
    ratio = pm.get("distance_ratio_original_over_method")
    if is_num(ratio) and is_num(pm.get("distance_to_retrain")):
        out.append({"level": "info", "text": f"{primary} brought the model {num(ratio, 3)} times closer to exact "
                                             "retraining than doing nothing (distance "
                                             f"{num(pm['distance_to_retrain'])} against "
                                             f"{num(_get(r, 'methods', 'original', 'distance_to_retrain'))})."})
    return out
