"""Plots for the report, rendered with matplotlib (Agg) to inline base64 PNG: no files, no network."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from unlearn_audit.stats import roc_curve_exact  # noqa: E402

COLORS = {"original": "#d62728", "retrain": "#2ca02c", "hfocu": "#1f77b4"}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def roc_plots(scores: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """ROC on linear and log-log axes with the diagonal; one curve per target model/state."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for key, (m, n) in scores.items():
        roc = roc_curve_exact(m, n)
        target = key.split(":")[-1].split("/")[0]
        style = "--" if key.endswith("noiseless") and target != "original" else "-"
        for ax in axes:
            ax.plot(roc.fpr, roc.tpr, style, color=COLORS.get(target, "grey"), label=f"{key} (AUC {roc.auc:.3f})")
    grid = np.logspace(-4, 0, 50)
    axes[0].plot([0, 1], [0, 1], ":", color="black", label="chance")
    axes[1].plot(grid, grid, ":", color="black")
    axes[0].set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (linear)")
    axes[1].set(xscale="log", yscale="log", xlim=(1e-3, 1), ylim=(1e-3, 1), xlabel="false positive rate",
                ylabel="true positive rate", title="ROC (log-log)")
    axes[0].legend(fontsize=7, loc="lower right")
    return _png(fig)


def score_histograms(scores: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    keys = list(scores)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        m, n = scores[key]
        bins = np.histogram_bin_edges(np.concatenate([m, n]), bins=30)
        ax.hist(n, bins=bins, alpha=0.6, density=True, label="non-members (0)", color="#7f7f7f")
        ax.hist(m, bins=bins, alpha=0.6, density=True, label="forget set (1)", color="#9467bd")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("score = −loss")
    axes[0][0].legend(fontsize=7)
    return _png(fig)


def tradeoff_plot(points: list[dict]) -> str:
    """Test accuracy and loss-attack AUC (with DeLong intervals) against σ."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    sig = np.array([p["sigma"] for p in points])
    xs = np.where(sig > 0, sig, np.nan)
    positive = sig[sig > 0]
    x0 = positive.min() / 3 if len(positive) else 1e-3
    xs = np.where(sig > 0, sig, x0)
    for name in ("hfocu", "retrain"):
        acc = [p[name]["test_accuracy"] for p in points]
        auc = np.array([p[name]["loss_attack_auc"]["auc"] for p in points])
        lo = np.array([p[name]["loss_attack_auc"]["ci_low"] for p in points])
        hi = np.array([p[name]["loss_attack_auc"]["ci_high"] for p in points])
        axes[0].plot(xs, acc, "o-", color=COLORS[name], label=name)
        axes[1].errorbar(xs, auc, yerr=[auc - lo, hi - auc], fmt="o-", capsize=3, color=COLORS[name], label=name)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("noise σ (σ = 0 drawn at the left edge)")
    axes[0].set(ylabel="test accuracy", title="utility")
    axes[1].axhline(0.5, ls=":", color="black")
    axes[1].set(ylabel="loss-attack AUC (95% CI)", title="membership leakage of the forget set")
    axes[0].legend()
    return _png(fig)


def distance_plot(methods: dict) -> str:
    names = [k for k in methods if k != "retrain"]
    vals = [methods[k]["distance_to_retrain"] for k in names]
    fig, ax = plt.subplots(figsize=(5, 2.6))
    ax.barh(names, vals, color=[COLORS.get(k, "grey") for k in names])
    ax.set_xscale("log")
    ax.set_xlabel("L2 distance to exact retraining (noiseless weights)")
    return _png(fig)


def latency_plot(methods: dict) -> str:
    names = [k for k in methods if methods[k].get("seconds_per_request")]
    vals = [methods[k]["seconds_per_request"] * 1000 for k in names]
    fig, ax = plt.subplots(figsize=(5, 2.4))
    ax.barh(names, vals, color=[COLORS.get(k, "grey") for k in names])
    ax.set_xscale("log")
    ax.set_xlabel("milliseconds per deletion request")
    return _png(fig)
