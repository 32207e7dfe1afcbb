"""Figures of the report, drawn with matplotlib (Agg) as inline SVG data URIs: vector in the PDF, no files written,
nothing loaded from the network. Every function accepts any number of methods, attacks and models."""

from __future__ import annotations

import base64
import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from unlearn_audit.stats import roc_curve_exact  # noqa: E402

# Fixed colours for the three reference models; other methods take the remaining palette entries in order.
_FIXED = {"original": "#c0392b", "retrain": "#2e8b57", "hfocu": "#1f5fa8"}
_PALETTE = ["#e08a00", "#7b4fa0", "#8c564b", "#d6619e", "#5f6b73", "#9a9a1f", "#17a2b8", "#3b3b98", "#6ab04c",
            "#b33939"]

plt.rcParams.update({"font.size": 8.5, "axes.titlesize": 9.5, "axes.labelsize": 8.5, "legend.fontsize": 7.5,
                     "xtick.labelsize": 7.5, "ytick.labelsize": 7.5, "axes.spines.top": False,
                     "axes.spines.right": False, "svg.fonttype": "none", "svg.hashsalt": "unlearn-audit"})


class Colours:
    """A stable colour per model name within one report."""

    def __init__(self) -> None:
        self._given: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        if name in _FIXED:
            return _FIXED[name]
        if name not in self._given:
            self._given[name] = _PALETTE[len(self._given) % len(_PALETTE)]
        return self._given[name]


def _svg(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _split_key(key: str) -> tuple[str, str]:
    """``"<target>/<state>"`` → (target, state)."""
    target, _, state = key.partition("/")
    return target, state or "noiseless"


def _style(state: str) -> str:
    return "--" if state.startswith("noiseless") else "-"


def roc_plots(scores: dict[str, tuple[np.ndarray, np.ndarray]], colours: Colours, title: str = "") -> str:
    """ROC of one attack on every target model: linear axes and log-log axes, each with the chance diagonal.

    ``scores`` maps ``"<target>/<state>"`` to (member scores, non-member scores); label 1 = forget-set record.
    The log-log panel starts at the smallest resolvable false-positive rate, 1 / (number of non-members).
    """
    fig, axes = plt.subplots(1, 2, figsize=(7.6, 3.5))
    n_non = max((len(n) for _, n in scores.values()), default=1)
    floor = 1.0 / max(n_non, 1)
    for key, (m, n) in scores.items():
        roc = roc_curve_exact(np.asarray(m, float), np.asarray(n, float))
        target, state = _split_key(key)
        label = f"{target} ({state}), AUC {roc.auc:.3f}"
        axes[0].plot(roc.fpr, roc.tpr, _style(state), color=colours(target), lw=1.3, label=label)
        axes[1].plot(np.maximum(roc.fpr, floor), np.maximum(roc.tpr, floor), _style(state), color=colours(target),
                     lw=1.3, label=label)
    axes[0].plot([0, 1], [0, 1], ":", color="black", lw=1, label="chance (random guessing)")
    axes[1].plot([floor, 1], [floor, 1], ":", color="black", lw=1)
    axes[0].set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, linear axes", xlim=(0, 1),
                ylim=(0, 1))
    axes[1].set(xscale="log", yscale="log", xlim=(floor, 1), ylim=(floor, 1), xlabel="false positive rate (log)",
                ylabel="true positive rate (log)", title="ROC, log-log axes (low false-positive region)")
    for ax in axes:
        ax.grid(alpha=0.25, lw=0.5)
        ax.set_aspect("equal", adjustable="box")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False, bbox_to_anchor=(0.5, -0.02 - 0.035 *
                                                                                       math.ceil(len(labels) / 2)))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _svg(fig)


def score_histograms(scores: dict[str, tuple[np.ndarray, np.ndarray]], colours: Colours,
                     score_name: str = "attack score") -> str:
    """One small histogram per target model: forget-set records (label 1) against never-trained records (label 0).
    Densities, common bins per panel; up to four panels a row."""
    keys = list(scores)
    cols = min(4, max(1, len(keys)))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.95 * cols, 1.75 * rows + 0.35), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, keys):
        m, n = (np.asarray(a, float) for a in scores[key])
        both = np.concatenate([m, n])
        both = both[np.isfinite(both)]
        lo, hi = (np.quantile(both, [0.005, 0.995]) if both.size else (0.0, 1.0))
        if not hi > lo:
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, 26)
        ax.hist(np.clip(n, lo, hi), bins=bins, density=True, color="#9e9e9e", alpha=0.75, label="never trained on (0)")
        ax.hist(np.clip(m, lo, hi), bins=bins, density=True, histtype="step", lw=1.4, color=colours(_split_key(key)[0]),
                label="forget set (1)")
        target, state = _split_key(key)
        ax.set_title(f"{target}\n{state}", fontsize=7.5)
        ax.set_yticks([])
        ax.tick_params(axis="x", labelsize=6.5)
    handles = [plt.Rectangle((0, 0), 1, 1, color="#9e9e9e", alpha=0.75),
               plt.Line2D([], [], color="black", lw=1.4)]
    fig.supxlabel(f"{score_name} (higher = more likely a member)", fontsize=7.5)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / (1.75 * rows + 0.35)))
    fig.legend(handles, ["records never trained on (label 0)", "forget-set records (label 1), colour of the model"],
               loc="upper center", ncol=2, frameon=False, fontsize=7, bbox_to_anchor=(0.5, 1.0))
    return _svg(fig)


def epsilon_histogram(groups: dict[str, np.ndarray], colours: Colours, cap: float | None = None) -> str:
    """Per-record ε lower bounds (one value per forget record) of each group against the reference retrains:
    the method, the do-nothing control and the retrain-vs-retrain null, overlaid."""
    fig, ax = plt.subplots(figsize=(6.2, 2.3))
    values = [np.asarray(v, float) for v in groups.values()]
    hi = max([float(v.max()) for v in values if v.size] + [0.1])
    bins = np.linspace(0.0, hi * 1.02 + 1e-9, 21).tolist()
    for name, v in groups.items():
        ax.hist(np.asarray(v, float), bins=bins, histtype="step", lw=1.6, color=colours(name),
                label=f"{name} ({np.mean(np.asarray(v) > 0):.0%} of records > 0)")
    if cap is not None:
        ax.axvline(cap, color="black", ls=":", lw=1, label=f"certified ε = {cap:g}")
    ax.set_xlabel("per-record ε lower bound (evaluation half, Clopper-Pearson)", fontsize=8)
    ax.set_ylabel("forget records", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return _svg(fig)


def tradeoff_plot(points: list[dict], colours: Colours, certified_sigma: float | None = None) -> str:
    """Test accuracy and loss-attack AUC (with intervals) of each released model against the noise scale σ."""
    fig, axes = plt.subplots(1, 2, figsize=(7.6, 3.0))
    sig = np.array([float(p["sigma"]) for p in points])
    positive = sig[sig > 0]
    x0 = positive.min() / 3 if positive.size else 1e-3
    xs = np.where(sig > 0, sig, x0)
    models = [k for k, v in points[0].items() if isinstance(v, dict) and "test_accuracy" in v] if points else []
    for name in models:
        acc = np.array([p[name]["test_accuracy"] for p in points], float)
        auc = np.array([p[name]["loss_attack_auc"]["auc"] for p in points], float)
        lo = np.array([p[name]["loss_attack_auc"]["ci_low"] for p in points], float)
        hi = np.array([p[name]["loss_attack_auc"]["ci_high"] for p in points], float)
        style = "o-" if name != "retrain" else "s--"
        axes[0].plot(xs, acc, style, ms=3.5, color=colours(name), label=name)
        axes[1].errorbar(xs, auc, yerr=[np.clip(auc - lo, 0, None), np.clip(hi - auc, 0, None)], fmt=style, ms=3.5,
                         capsize=2.5, color=colours(name), label=name)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("noise scale σ (σ = 0 drawn at the left edge)")
        ax.grid(alpha=0.25, lw=0.5)
        if certified_sigma:
            ax.axvline(certified_sigma, color="#555", lw=1, ls="-.")
            ax.annotate("certified σ", (certified_sigma, 0.02), xycoords=("data", "axes fraction"), rotation=90,
                        fontsize=6.5, ha="right", va="bottom", color="#555")
    axes[0].set(ylabel="test accuracy", title="utility of the released model", ylim=(0, 1.02))
    axes[1].axhline(0.5, ls=":", color="black", lw=1)
    axes[1].set(ylabel="loss-attack AUC (CI)", title="membership signal of the forget set")
    axes[0].legend(frameon=False)
    fig.tight_layout()
    return _svg(fig)


def distance_plot(methods: dict, colours: Colours, bound: float | None = None, bound_label: str = "") -> str:
    """L2 distance of each method's noiseless weights to exact retraining (log axis), with the certified bound."""
    names = [k for k in methods if k != "retrain"]
    vals = np.array([float(methods[k].get("distance_to_retrain") or 0.0) for k in names])
    positive = vals[vals > 0]
    floor = (positive.min() if positive.size else 1.0) / 10
    if bound:
        floor = min(floor, bound / 10)
    fig, ax = plt.subplots(figsize=(7.0, 0.5 + 0.34 * max(len(names), 1)))
    ax.barh(names, np.maximum(vals, floor), color=[colours(k) for k in names], height=0.6)
    for i, v in enumerate(vals):
        ax.annotate(f"{v:.3g}" if v > 0 else "0", (max(v, floor), i), xytext=(3, 0), textcoords="offset points",
                    va="center", fontsize=7)
    if bound:
        ax.axvline(bound, color="black", ls="--", lw=1)
        ax.annotate(bound_label or f"certified bound Δ = {bound:.3g}", (bound, 1.0),
                    xycoords=("data", "axes fraction"),
                    xytext=(-3, -2), textcoords="offset points", ha="right", va="top", fontsize=7)
    ax.set_xscale("log")
    top = max([bound or 0.0, *(vals.tolist() or [1.0])]) * 3
    ax.set_xlim(floor, top)
    ax.invert_yaxis()
    ax.set_xlabel("L2 distance of the noiseless weights to exact retraining (log scale; shorter is better)")
    ax.grid(axis="x", alpha=0.25, lw=0.5)
    fig.tight_layout()
    return _svg(fig)


def latency_plot(rows: list[tuple[str, float]], colours: Colours) -> str:
    """Seconds per deletion request for each method (log axis); ``rows`` = (method, seconds)."""
    rows = [(n, s) for n, s in rows if s and s > 0]
    fig, ax = plt.subplots(figsize=(7.0, 0.5 + 0.34 * max(len(rows), 1)))
    if rows:
        names, secs = zip(*rows)
        ms = np.array(secs) * 1000
        ax.barh(names, ms, color=[colours(n) for n in names], height=0.6)
        for i, v in enumerate(ms):
            text = f"{v:.3g} ms" if v < 1000 else f"{v / 1000:.3g} s"
            ax.annotate(text, (v, i), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
        ax.set_xscale("log")
        ax.set_xlim(ms.min() / 5, ms.max() * 8)
        ax.invert_yaxis()
    ax.set_xlabel("milliseconds per deletion request (log scale)")
    ax.grid(axis="x", alpha=0.25, lw=0.5)
    fig.tight_layout()
    return _svg(fig)
