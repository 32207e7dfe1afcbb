"""The audit's verdict: pass, fail or inconclusive (DESIGN §5), with the tests behind it.

For the primary method (HF-OCU unless not run), one paired TOST per attack compares the released unlearned model
with the retrained model released at the same σ (noiseless when the method is uncertified):
* fail — any attack shows a difference beyond ±margin (either direction: an AUC far below the reference is
  over-unlearning), or the empirical ε lower bound exceeds the certified ε (an implementation bug);
* pass — every attack shows equivalence within ±margin;
* inconclusive — otherwise; the verdict says roughly how many forget records would decide.
The control (original vs retrain) is reported beside it: if even a do-nothing unlearner is not told apart, a pass
says little, and the verdict notes it.

The equivalence tests against chance (AUC within 0.5 ± margin, DESIGN §4) are reported next to the verdict but do
not decide it: exact retraining itself is not at chance on these attacks (default digits audit: loss attack 0.455,
LiRA 0.451, MIA-U 0.73, the last because deletion itself leaks, Chen et al. 2021), so requiring them would fail
the oracle. Attacks that refused (e.g. underfit shadows) are listed in the verdict and do not count either way.
"""

from __future__ import annotations

EXIT_CODES = {"pass": 0, "fail": 1, "inconclusive": 3}


def _describe(row: dict, margin: float, alpha: float) -> str:
    diff, attack = row["difference"], row["attack"]
    ci = f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"
    if row["decision"] == "equivalent":
        return (f"{attack}: AUC within ±{margin:g} of the retrained model's (difference {diff:+.4f}, "
                f"{100 * (1 - 2 * alpha):.0f}% CI {ci})")
    if row["decision"] == "different":
        kind = ("over-unlearning (AUC below the retrained model's)" if row["direction"] == "below"
                else "residual membership signal (AUC above the retrained model's)")
        return (f"{attack}: AUC differs from the retrained model's by more than ±{margin:g}: {kind}, "
                f"difference {diff:+.4f}")
    n = row.get("records_to_decide")
    return f"{attack}: interval {ci} straddles the margin ±{margin:g}" + (
        f"; about {n} forget records would decide" if n else "")


def decide(primary_rows: list[dict], control_rows: list[dict], empirical_epsilon: dict, *, alpha: float,
           margin: float, method: str) -> dict:
    decisions = [r["decision"] for r in primary_rows]
    if "different" in decisions:
        status = "fail"
    elif decisions and all(d == "equivalent" for d in decisions):
        status = "pass"
    else:
        status = "inconclusive"
    reasons = [_describe(r, margin, alpha) for r in primary_rows]
    if not primary_rows:
        reasons.append(f"no attack compared {method} with the retrained model: every attack refused on these targets "
                       "(the notes say why), so there is nothing to decide on")
    notes = []
    if empirical_epsilon.get("violated"):
        status = "fail"
        reasons.append("IMPLEMENTATION FAILURE: " + empirical_epsilon["message"])
    weak = [r["attack"] for r in control_rows if r["decision"] != "different"]
    if weak:
        notes.append(f"the control (original model vs retrain) was not told apart by {', '.join(weak)}: that attack "
                     "has little power on this forget set, so its pass is weak evidence")
    first = primary_rows[0] if primary_rows else {}
    return {"status": status, "exit_code": EXIT_CODES[status], "method": method, "reasons": reasons, "notes": notes,
            "test": f"paired DeLong TOST on attack AUC, {method} vs exact retrain (released at the same σ)",
            "alpha": alpha, "margin": margin, "n_members": first.get("n_members"),
            "n_nonmembers": first.get("n_nonmembers"),
            "per_attack": [{"attack": r["attack"], "decision": r["decision"]} for r in primary_rows],
            "control": [{"attack": r["attack"], "decision": r["decision"]} for r in control_rows]}
