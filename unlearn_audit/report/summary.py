"""The short plain-text summary the CLI prints after an audit."""

from __future__ import annotations


def summary_table(r: dict) -> str:
    rows = [f"{'method':<10} {'dist→retrain':>13} {'test acc':>9} {'released':>9} {'s/request':>10}"]
    for name, m in r["methods"].items():
        rel = m.get("accuracy_released", {}).get("test")
        rows.append(f"{name:<10} {m['distance_to_retrain']:>13.4g} {m['accuracy']['test']:>9.4f} "
                    f"{(f'{rel:.4f}' if rel is not None else '—'):>9} {m['seconds_per_request']:>10.3g}")
    rows.append("")
    rows.append(f"{'attack target':<28} {'AUC':>7} {'95% CI':>18}")
    for a in r["attacks"]:
        auc = a["auc"]
        rows.append(f"{a['target'] + ' (' + a['state'] + ')':<28} {auc['auc']:>7.4f} "
                    f"[{auc['ci_low']:.3f}, {auc['ci_high']:.3f}]")
    c = r["certificate"]
    rows.append("")
    rows.append(f"certificate: ε={c['epsilon']:g} δ={c['delta']:g} Δ={c['sensitivity']:.4g} σ={c['sigma']:.4g}")
    v = r["verdict"]
    rows.append(f"verdict: {v['status'].upper()} — " + "; ".join(v["reasons"]))
    rows += [f"note: {n}" for n in v["notes"]]
    return "\n".join(rows)
