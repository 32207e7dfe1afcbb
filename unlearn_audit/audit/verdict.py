"""The audit's verdict: pass, fail or inconclusive (DESIGN §5), with the test behind it.

Rule:
* fail   — the empirical ε lower bound exceeds the certified ε (an implementation bug), or the released unlearned
           model's attack AUC differs from the released retrained model's by more than the margin (either direction:
           AUC far below the reference is over-unlearning, also a fail);
* pass   — the paired TOST shows the two AUCs equivalent within ±margin;
* inconclusive — the interval straddles the margin; the verdict says roughly how many forget records would decide.
The control (original vs retrain) is reported with it: if even a do-nothing unlearner is not told apart, a pass says
little, and the verdict notes it.
"""

from __future__ import annotations

EXIT_CODES = {"pass": 0, "fail": 1, "inconclusive": 3}


def decide(primary: dict, control: dict, empirical_epsilon: dict, *, alpha: float, margin: float) -> dict:
    reasons, notes = [], []
    status = {"equivalent": "pass", "different": "fail", "inconclusive": "inconclusive"}[primary["decision"]]
    diff = primary["difference"]
    if primary["decision"] == "equivalent":
        reasons.append(f"attack AUC of the released unlearned model is within ±{margin:g} of the retrained model's "
                       f"(difference {diff:+.4f}, {100 * (1 - 2 * alpha):.0f}% CI [{primary['ci_low']:+.4f}, "
                       f"{primary['ci_high']:+.4f}], paired DeLong TOST, α={alpha:g})")
    elif primary["decision"] == "different":
        kind = "over-unlearning (AUC below the retrained model's)" if primary["direction"] == "below" else \
            "residual membership signal (AUC above the retrained model's)"
        reasons.append(f"attack AUC differs from the retrained model's by more than ±{margin:g}: {kind}, "
                       f"difference {diff:+.4f}")
    else:
        n = primary.get("records_to_decide")
        reasons.append(f"the interval [{primary['ci_low']:+.4f}, {primary['ci_high']:+.4f}] straddles the margin "
                       f"±{margin:g}" + (f"; about {n} forget records would decide" if n else ""))
    if empirical_epsilon.get("violated"):
        status = "fail"
        reasons.append("IMPLEMENTATION FAILURE: " + empirical_epsilon["message"])
    if control["decision"] != "different":
        notes.append("the control (original model vs retrain) was not detected as different: the attack has little "
                     "power on this forget set, so a pass is weak evidence")
    return {"status": status, "exit_code": EXIT_CODES[status], "reasons": reasons, "notes": notes,
            "test": "paired DeLong TOST on loss-attack AUC, released unlearned vs released retrained",
            "alpha": alpha, "margin": margin, "n_members": primary["n_members"],
            "n_nonmembers": primary["n_nonmembers"], "control_decision": control["decision"]}
