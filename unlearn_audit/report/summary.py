"""The short plain-text summary the CLI prints after an audit (any number of methods and attacks; refused attacks and
an uncertified primary method included)."""

from __future__ import annotations

from unlearn_audit.report.view import DASH, findings, is_num


def _f(x, spec: str) -> str:
    return format(x, spec) if is_num(x) else DASH


def summary_table(r: dict) -> str:
    names = list(r.get("methods") or {})
    w = max([10, *(len(n) for n in names)])
    rows = [f"{'method':<{w}} {'dist→retrain':>13} {'test acc':>9} {'released':>9} {'s/request':>10}"]
    for name in names:
        m = r["methods"][name] or {}
        rel = (m.get("accuracy_released") or {}).get("test")
        rows.append(f"{name:<{w}} {_f(m.get('distance_to_retrain'), '.4g'):>13} "
                    f"{_f((m.get('accuracy') or {}).get('test'), '.4f'):>9} {_f(rel, '.4f'):>9} "
                    f"{_f(m.get('seconds_per_request'), '.3g'):>10}")
    rows.append("")
    alpha = (r.get("verdict") or {}).get("alpha")
    level = f"{100 * (1 - alpha):.4g}% CI" if is_num(alpha) else "CI"
    rows.append(f"{'attack':<20} {'target':<28} {'AUC':>7} {level:>18}")
    for a in r.get("attacks") or []:
        where = f"{a.get('attack', ''):<20} {a.get('target', '') + ' (' + a.get('state', '') + ')':<28}"
        if a.get("refused"):
            rows.append(f"{where} {a['refused']}")
            continue
        auc = a.get("auc") or {}
        rows.append(f"{where} {_f(auc.get('auc'), '>7.4f')} [{_f(auc.get('ci_low'), '.3f')}, "
                    f"{_f(auc.get('ci_high'), '.3f')}]")
    c = r.get("certificate")
    rows.append("")
    if c:
        rows.append(f"certificate: ε={_f(c.get('epsilon'), 'g')} δ={_f(c.get('delta'), 'g')} "
                    f"Δ={_f(c.get('sensitivity'), '.4g')} σ={_f(c.get('sigma'), '.4g')}")
    else:
        rows.append(f"certificate: none ({r.get('primary_method', 'the primary method')} is not certified)")
    v = r.get("verdict") or {}
    rows.append(f"verdict: {str(v.get('status', DASH)).upper()} — " + "; ".join(v.get("reasons") or []))
    rows += [f"note: {n}" for n in v.get("notes") or []]
    rows += [f"{'ALARM' if f['level'] == 'alarm' else 'warning'}: {f['text']}" for f in findings(r)
             if f["level"] in ("alarm", "warn")]
    return "\n".join(rows)
