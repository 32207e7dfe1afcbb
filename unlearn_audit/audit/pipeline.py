"""The audit run (DESIGN §5): data → train with approximators → choose U → unlearn → measure → attack → statistics
→ verdict. Returns a JSON-ready results dict; writing files is the caller's job (see :mod:`unlearn_audit.audit.run`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

import numpy as np
import torch

from unlearn_audit import __version__
from unlearn_audit.audit import measure
from unlearn_audit.audit.environment import environment, hash_record_id
from unlearn_audit.audit.tradeoff import privacy_utility_sweep
from unlearn_audit.audit.verdict import decide
from unlearn_audit.certify import release
from unlearn_audit.config import AuditConfig
from unlearn_audit.data import load_dataset, prepare, split_dataset
from unlearn_audit.hfocu import HFOCUUnlearner
from unlearn_audit.models import build_model
from unlearn_audit.models.functional import weights_hash
from unlearn_audit.training import SGDConfig, retrain_without

SCHEMA_VERSION = "1.0"

Progress = Callable[[str, int, int], None]


class AuditInputError(ValueError):
    """Bad input discovered while running (e.g. a forget file naming unknown ids)."""


@dataclass
class AuditArtefacts:
    """Large outputs kept beside results.json (weights as .npy; never pickled)."""

    weights: dict[str, np.ndarray]
    forget_ids: list[str]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _tensor(a, dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=dtype)


def choose_forget_set(cfg: AuditConfig, train_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Training positions of U: a seeded random fraction, or the ids listed in ``unlearning.forget_file``."""
    if cfg.unlearning.forget_file:
        from pathlib import Path

        p = Path(cfg.unlearning.forget_file)
        if not p.is_file():
            raise AuditInputError(f"unlearning.forget_file: file not found: {p}")
        wanted = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        index = {rid: i for i, rid in enumerate(train_ids)}
        missing = [r for r in wanted if r not in index]
        if missing:
            raise AuditInputError(f"unlearning.forget_file: record id '{missing[0]}' is not in the training set")
        if len(set(wanted)) != len(wanted):
            raise AuditInputError("unlearning.forget_file: a record id is listed twice")
        return np.array([index[r] for r in wanted], dtype=np.int64)
    k = max(2, int(round(cfg.unlearning.forget_fraction * len(train_ids))))
    return np.sort(rng.choice(len(train_ids), size=k, replace=False))


def run_audit(cfg: AuditConfig, progress: Progress | None = None) -> tuple[dict, AuditArtefacts]:
    """Run a complete audit. ``progress(step_name, done, total)`` is called on long steps."""
    started, t_start = _now(), time.perf_counter()
    say = progress or (lambda *_: None)
    rng = np.random.default_rng(cfg.seed)
    alpha, margin = cfg.audit.alpha, cfg.audit.margin

    # -- data ------------------------------------------------------------------------------------------------
    say("loading data", 0, 1)
    dc = cfg.data
    ds = load_dataset(dc.dataset, data_dir=dc.data_dir, path=dc.path, label_column=dc.label_column)
    splits = prepare(split_dataset(ds, train_fraction=dc.train_fraction, test_fraction=dc.test_fraction,
                                   population_fraction=dc.population_fraction, seed=cfg.seed,
                                   max_train=dc.max_train), standardize=dc.standardize, unit_norm=dc.unit_norm)
    train, test, pop = splits.train, splits.test, splits.population
    x, y = _tensor(train.x), _tensor(train.y, torch.int64)
    xt, yt = _tensor(test.x), _tensor(test.y, torch.int64)
    xp, yp = _tensor(pop.x), _tensor(pop.y, torch.int64)
    say("loading data", 1, 1)

    # -- train with approximators ------------------------------------------------------------------------------
    tc = cfg.training
    sgd = SGDConfig(epochs=tc.epochs, batch_size=tc.batch_size, lr=tc.lr, decay=tc.decay, lam=tc.lam, clip=tc.clip,
                    clip_norm=tc.clip_norm, weight_norm_bound=tc.weight_norm_bound, seed=cfg.seed)
    model = build_model(cfg.model.kind, train.feature_shape, ds.n_classes, seed=cfg.seed, hidden=cfg.model.hidden)
    unlearner = HFOCUUnlearner(model, sgd, mode="all", curvature=cfg.unlearning.curvature,
                               order=cfg.unlearning.order)
    unlearner.fit(x, y, train.ids, progress=lambda d, t: say("training with approximators", d, t))
    w_orig = unlearner.weights_.clone()
    schedule = unlearner.schedule_

    # -- forget set and deletion requests -----------------------------------------------------------------------
    forget_pos = choose_forget_set(cfg, train.ids, rng)
    retain_mask = np.ones(len(x), dtype=bool)
    retain_mask[forget_pos] = False
    forget_ids = [str(train.ids[i]) for i in forget_pos]
    requests = []
    for k, chunk in enumerate(np.array_split(np.array(forget_ids), min(cfg.unlearning.requests, len(forget_ids)))):
        before = weights_hash(unlearner.state_)
        receipt = unlearner.delete(list(chunk))
        requests.append({"request_id": f"req-{k + 1:04d}", "n_records": len(chunk),
                         "hashed_record_ids": [hash_record_id(r) for r in chunk], "applied_at": _now(),
                         "seconds": receipt.seconds, "state_hash_before": before,
                         "state_hash_after": weights_hash(unlearner.state_)})
    w_hf = unlearner.state_.clone()

    # -- exact retraining (the oracle) ---------------------------------------------------------------------------
    say("exact retraining", 0, 1)
    t0 = time.perf_counter()
    w_re = retrain_without(model, x, y, sgd, schedule, forget_pos, normalisation=cfg.unlearning.normalisation,
                           dtype=unlearner.dtype)
    retrain_seconds = time.perf_counter() - t0
    say("exact retraining", 1, 1)

    # -- certificate and releases ---------------------------------------------------------------------------------
    pc = cfg.privacy
    w_hf_released, cert, sigma = unlearner.release(epsilon=pc.epsilon, delta=pc.delta, seed=cfg.seed + 1,
                                                   mechanism=pc.mechanism)
    # The retrained reference is released with the same σ and the SAME noise draw (common random numbers): the
    # paired comparison then measures only what differs between the two models, not two independent noise draws.
    w_re_released = release(w_re, sigma, cfg.seed + 1)

    # -- measurements -----------------------------------------------------------------------------------------------
    xf, yf = x[forget_pos], y[forget_pos]
    xr, yr = x[retain_mask], y[retain_mask]

    def accuracies(w):
        return {"test": model.accuracy(w, xt, yt), "forget": model.accuracy(w, xf, yf),
                "retain": model.accuracy(w, xr, yr)}

    store_bytes = unlearner.recursion_.approximators.element_size() * unlearner.recursion_.approximators.numel()
    d = lambda a, b: float((a.double() - b.double()).norm())                                   # noqa: E731
    n_req = len(requests)
    methods = {
        "original": {"description": "model trained on all records, nothing removed", "certified": False,
                     "distance_to_retrain": d(w_orig, w_re), "accuracy": accuracies(w_orig),
                     "seconds_per_request": 0.0, "precompute_seconds": 0.0, "storage_bytes": 0},
        "retrain": {"description": f"exact replay of the schedule without U ({cfg.unlearning.normalisation} "
                                   "normalisation)", "certified": False, "distance_to_retrain": 0.0,
                    "accuracy": accuracies(w_re), "accuracy_released": accuracies(w_re_released),
                    "seconds_per_request": retrain_seconds, "precompute_seconds": 0.0, "storage_bytes": 0},
        "hfocu": {"description": "HF-OCU: w_T + sum of approximators, plus Gaussian noise", "certified": True,
                  "distance_to_retrain": d(w_hf, w_re), "distance_to_retrain_released": d(w_hf_released,
                                                                                          w_re_released),
                  "accuracy": accuracies(w_hf), "accuracy_released": accuracies(w_hf_released),
                  "seconds_per_request": float(np.mean([r["seconds"] for r in requests])),
                  "latency_seconds": {"p50": float(np.percentile([r["seconds"] for r in requests], 50)),
                                      "p99": float(np.percentile([r["seconds"] for r in requests], 99)),
                                      "n_requests": n_req},
                  "precompute_seconds": unlearner.fit_seconds_, "storage_bytes": int(store_bytes),
                  "curvature": unlearner.recursion_.curvature_name, "order": cfg.unlearning.order,
                  "hvp_count": int(unlearner.recursion_.hvp_count)},
    }
    methods["hfocu"]["distance_ratio_original_over_hfocu"] = (
        methods["original"]["distance_to_retrain"] / max(methods["hfocu"]["distance_to_retrain"], 1e-300))

    # -- attacks ----------------------------------------------------------------------------------------------------
    say("attacks", 0, 1)
    members, nonmembers, calibration = (xf, yf), (xp, yp), (xt, yt)
    targets = [("original", "noiseless", w_orig), ("retrain", "released", w_re_released),
               ("hfocu", "released", w_hf_released), ("retrain", "noiseless", w_re), ("hfocu", "noiseless", w_hf)]
    attack_runs = {(t, s): measure.loss_attack(model, w, members, nonmembers, calibration, target=t, state=s,
                                               alpha=alpha) for t, s, w in targets}
    equivalence = [
        measure.paired_equivalence(attack_runs[("hfocu", "released")], attack_runs[("retrain", "released")],
                                   margin=margin, alpha=alpha, label="hfocu vs retrain (released, primary)"),
        measure.paired_equivalence(attack_runs[("hfocu", "noiseless")], attack_runs[("retrain", "noiseless")],
                                   margin=margin, alpha=alpha, label="hfocu vs retrain (noiseless internal state)"),
        measure.paired_equivalence(attack_runs[("original", "noiseless")], attack_runs[("retrain", "noiseless")],
                                   margin=margin, alpha=alpha, label="original vs retrain (control: power check)"),
        measure.chance_equivalence(attack_runs[("hfocu", "released")], margin=margin, alpha=alpha,
                                   label="hfocu (released) vs chance 0.5"),
    ]
    say("attacks", 1, 1)
    emp_eps = measure.weight_space_epsilon(w_hf, w_re, sigma, pc.delta, pc.epsilon, draws=20000,
                                           seed=cfg.seed + 2, alpha=alpha)

    # -- privacy-utility sweep --------------------------------------------------------------------------------------
    tradeoff = privacy_utility_sweep(model, w_hf, w_re, cfg.audit.sweep_sigmas + [sigma], cert.sensitivity,
                                     pc.delta, members, nonmembers, (xt, yt), seed=cfg.seed + 3, alpha=alpha,
                                     progress=lambda dd, tt: say("privacy-utility sweep", dd, tt))

    verdict = decide(equivalence[0], equivalence[2], emp_eps, alpha=alpha, margin=margin)
    results = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "unlearn-audit", "version": __version__},
        "run": {"started": started, "finished": _now(), "seconds": time.perf_counter() - t_start,
                "seed": cfg.seed, "config_digest": cfg.digest()},
        "environment": environment(),
        "disclaimer": "Technical evidence about a machine-unlearning procedure; not legal advice.",
        "data": {"dataset": ds.name, "n_total": ds.n, "n_train": train.n, "n_test": test.n,
                 "n_population": pop.n, "n_classes": ds.n_classes, "feature_shape": list(train.feature_shape),
                 "data_digest": ds.digest(), "standardize": dc.standardize, "unit_norm": dc.unit_norm,
                 "max_feature_norm": float(np.linalg.norm(train.x.reshape(train.n, -1), axis=1).max())},
        "model": {"kind": model.kind, "n_parameters": model.dim, "description": model.describe(),
                  "weights_hash": weights_hash(w_orig)},
        "training": {**sgd.__dict__, "n_steps": schedule.n_steps, "schedule_digest": schedule.digest(),
                     "seconds_with_approximators": unlearner.fit_seconds_,
                     "accuracy_train": model.accuracy(w_orig, x, y), "accuracy_test": model.accuracy(w_orig, xt, yt)},
        "forget_set": {"n": len(forget_pos), "fraction": len(forget_pos) / len(x),
                       "source": cfg.unlearning.forget_file or "random", "requests": requests},
        "certificate": {"epsilon": pc.epsilon, "delta": pc.delta, "mechanism": pc.mechanism,
                        "sigma": sigma, "noise_seed": cfg.seed + 1, **cert.to_dict()},
        "methods": methods,
        "attacks": [{k: v for k, v in a.items() if not k.startswith("_")} for a in attack_runs.values()],
        "equivalence": equivalence,
        "empirical_epsilon": emp_eps,
        "tradeoff": tradeoff,
        "verdict": verdict,
    }
    artefacts = AuditArtefacts(
        weights={"original": w_orig.numpy(), "hfocu_internal": w_hf.numpy(), "hfocu_released": w_hf_released.numpy(),
                 "retrain": w_re.numpy()},
        forget_ids=forget_ids)
    results["_plot_data"] = {f"{t}/{s}": a["_scores"] for (t, s), a in attack_runs.items()}
    return results, artefacts
