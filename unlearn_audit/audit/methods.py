"""Unlearning methods the audit compares, built-in or yours, all behind one protocol
(:mod:`unlearn_audit.audit.protocol`) and one registry; all run on the same trained model and forget set (DESIGN
§2.5).

``resolve_methods(cfg)`` turns ``unlearning.methods`` (built-in names and ``"package.module:Class"`` plugins) and an
external weights file into :class:`ResolvedMethod` objects before any work; :func:`run_method` is the one dispatcher:
it builds the method's :class:`~unlearn_audit.audit.protocol.UnlearningTask` from the audit's context, runs it,
checks what it returned (shape, finiteness, certificate) and records a :class:`MethodOutcome`. To add a built-in:
subclass :class:`~unlearn_audit.audit.protocol.UnlearningMethod` and register it in ``METHODS``.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from unlearn_audit.audit.context import AuditContext
from unlearn_audit.audit.environment import hash_record_id
from unlearn_audit.audit.protocol import (
    PairedRun,
    RequestTiming,
    UnlearningMethod,
    UnlearningResult,
    UnlearningTask,
)
from unlearn_audit.certify import NotCertifiable
from unlearn_audit.common import array_sha256, to_jsonable
from unlearn_audit.config import AuditConfig
from unlearn_audit.models.functional import weights_hash
from unlearn_audit.plugins import (
    PluginError,
    PluginInfo,
    describe_error,
    is_plugin_spec,
    load_plugin,
    user_failure,
)


class MethodError(ValueError):
    """A user's unlearning method (or externally unlearned weights) cannot be judged: one line naming it."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclass
class MethodOutcome:
    """What one unlearning method produced. ``weights`` is the noiseless result; ``released`` what would be
    published (``weights`` plus noise for certified methods, ``weights`` itself otherwise); ``sigma`` the noise
    scale of the release (0 for uncertified methods); the retrained reference is released with the same σ."""

    name: str
    description: str
    weights: torch.Tensor
    released: torch.Tensor
    sigma: float
    certified: bool
    seconds_per_request: float
    precompute_seconds: float
    storage_bytes: int
    certificate: dict | None = None
    requests: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# -- built-in methods (DESIGN §2.3, §2.5; unlearn_audit.baselines) -------------------------------------------------
class HFOCU(UnlearningMethod):
    """HF-OCU: the forget set is sent as ``unlearning.requests`` deletion requests, each a vector addition; the
    release adds Gaussian noise calibrated to all deletions. Uses the approximators kept while the run trained
    (``task.hfocu``); the paired models carry Σ_U a_u from their own training (:meth:`paired`)."""

    name = "hfocu"
    description = "HF-OCU: w_T + sum of the deleted records' approximators, plus Gaussian noise"

    def unlearn(self, task: UnlearningTask) -> UnlearningResult:
        un = task.hfocu
        if un is None:
            raise RuntimeError("hfocu needs the run's fitted HF-OCU unlearner (task.hfocu)")
        if un.deleted_:
            raise RuntimeError("the run's HF-OCU unlearner has already served deletions (is an HF-OCU method listed "
                               "twice, e.g. a plugin subclassing HFOCU beside hfocu?)")
        requests = []
        for chunk in task.request_chunks():
            before = weights_hash(un.state_)
            receipt = un.delete([task.forget_ids[i] for i in chunk])
            requests.append(RequestTiming(chunk, receipt.seconds, {"state_hash_before": before,
                                                                   "state_hash_after": weights_hash(un.state_)}))
        pc = task.config.privacy
        noise_seed = task.seed + 1
        try:
            released, cert, sigma = un.release(epsilon=pc.epsilon, delta=pc.delta, seed=noise_seed,
                                               mechanism=pc.mechanism)
            cert_dict = cert.to_dict()
        except NotCertifiable as err:
            # the a-posteriori bound blew up: no σ is handed out and nothing is released; the audit judges the
            # noiseless state's forgetting and says the release is not certifiable (the verdict cannot pass)
            sigma, released, certified = 0.0, un.state_.clone(), False
            cert_dict = {"bound": f"{pc.bound} (not certifiable)", "sensitivity": None, "constants": {},
                         "n_forget": len(un.deleted_), "model": un.model.kind, "not_certifiable": str(err)}
        else:
            certified = True
        return UnlearningResult(
            weights=un.state_.clone(), released=released, sigma=sigma, certified=certified,
            certificate={"epsilon": pc.epsilon, "delta": pc.delta, "mechanism": pc.mechanism, "sigma": sigma,
                         "noise_seed": noise_seed, **cert_dict},
            requests=requests, precompute_seconds=un.fit_seconds_, storage_bytes=un.storage_bytes(),
            extra={"mode": un.mode, "curvature": un.curvature_name_, "order": task.config.unlearning.order,
                   "layout": un.layout_, "layout_reason": un.layout_reason, "hvp_count": int(un.hvp_count_)})

    def paired(self, run: PairedRun) -> torch.Tensor:
        return run.pairs.hfocu


def _second_order_requests(task: UnlearningTask, delete) -> list[RequestTiming]:
    """Send the forget set as ``task.requests`` requests through ``delete(training positions) -> seconds``."""
    pos = np.asarray(task.forget_positions)
    return [RequestTiming(idx, float(delete(pos[idx]))) for idx in task.request_chunks()]


class _SecondOrder(UnlearningMethod):
    solver_cls: type

    def unlearn(self, task: UnlearningTask) -> UnlearningResult:
        bc = task.config.baselines
        un = self.solver_cls(task.model, task.sgd.lam, solver=bc.solver, exact_max_dim=bc.exact_max_dim,
                             cg_tol=bc.cg_tol, cg_maxiter=bc.cg_maxiter,
                             hvp_precision=bc.hvp_precision).fit(task.weights, task.x, task.y)
        requests = _second_order_requests(task, un.delete)
        w = un.state_.to(task.weights.dtype)
        damped = un.any_indefinite()
        description = self.description + (" [Hessian indefinite: damping added, see 'solves']" if damped else "")
        return UnlearningResult(
            weights=w, requests=requests, precompute_seconds=un.precompute_seconds_,
            storage_bytes=int(un.storage_bytes), description=description,
            extra={"solver": un.solver_name, "hessian_indefinite": damped, "precompute": un.precompute_info_ or None,
                   "solves": un.solves_,
                   "storage_note": "beyond the model and the training data the method needs at request time"})


class NewtonStep(_SecondOrder):
    """Newton step (Sekhari et al. 2021) on the cumulative forget set; one factor-and-solve per request."""

    name = "ns"
    description = ("Newton step (Sekhari et al. 2021): w + (1/(n-m)) H_{S\\U}^-1 sum_u grad l(w; z_u), lambda "
                   "included; uncertified here")

    def __init__(self) -> None:
        from unlearn_audit.baselines import NewtonStep as solver

        self.solver_cls = solver


class InfluenceJackknife(_SecondOrder):
    """Infinitesimal jackknife: H_S factored in the precompute; triangular solves per request."""

    name = "ij"
    description = ("infinitesimal jackknife: w + (1/n) H_S^-1 sum_u grad l(w; z_u), H_S factored before "
                   "requests; uncertified")

    def __init__(self) -> None:
        from unlearn_audit.baselines import InfluenceJackknife as solver

        self.solver_cls = solver


class CertifiedNewtonStep(UnlearningMethod):
    """Certified Newton step of Zhang et al. (ICML 2024): LiSSA, their bound with measured constants, AGM noise."""

    name = "cns"
    description = ("certified Newton step (Zhang et al. ICML 2024): one Newton step per request on the retained "
                   "data from the previous estimate, inverse by LiSSA, Gaussian noise")

    def unlearn(self, task: UnlearningTask) -> UnlearningResult:
        from unlearn_audit.baselines import CertifiedNewtonStep as CNS
        from unlearn_audit.certify import release

        bc, pc = task.config.baselines, task.config.privacy
        un = CNS(task.model, task.sgd.lam, damping=bc.cns_damping, chains=bc.cns_chains, depth=bc.cns_depth,
                 hessian_batch=bc.cns_hessian_batch, scale=bc.cns_scale, radius=task.sgd.weight_norm_bound,
                 seed=task.seed, hvp_precision=bc.hvp_precision).fit(task.weights, task.x, task.y)
        requests = _second_order_requests(task, un.delete)
        for r, detail in zip(requests, un.requests_):
            r.details.update({k: v for k, v in detail.items() if k not in ("n_records", "seconds")})
        cert, sigma = un.certificate(pc.epsilon, pc.delta, pc.mechanism)
        noise_seed = task.seed + 1
        cert["noise_seed"] = noise_seed
        w = un.state_.to(task.weights.dtype)
        last = un.requests_[-1]
        return UnlearningResult(
            weights=w, released=release(w, sigma, noise_seed), sigma=sigma, certified=True, certificate=cert,
            requests=requests, precompute_seconds=un.precompute_seconds_, storage_bytes=0,
            extra={"certificate_seconds_per_request": float(np.mean([r["certificate_seconds"]
                                                                      for r in un.requests_])),
                   "lissa": last["lissa"], "lissa_scale_how": un.scale_how_,
                   "damping_raised": any(r["damping_note"] for r in un.requests_),
                   "storage_note": "no stored statistics; needs the retained training data at request time"})

    def diagnostics(self, result: UnlearningResult, task: UnlearningTask, w_retrain: torch.Tensor) -> dict:
        """Is the theorem's reference assumption met? (An unlearner never has the retrained model.)"""
        from unlearn_audit.baselines import DataHessian

        assert result.requests and result.certificate is not None
        last = result.requests[-1].details
        grad_re = float(DataHessian(task.model, task.sgd.lam, w_retrain, *task.retain).gradient().norm())
        mu = last["damping"] + last["lambda_min"]
        dist = float((result.weights.double() - w_retrain.double()).norm())
        return {"audit_diagnostics": {
            "distance_to_retrain_vs_certified_bound": [dist, result.certificate["sensitivity"]],
            "retrain_norm_vs_R": [float(w_retrain.double().norm()), last["R"]],
            "retrain_gradient_norm_on_retained_objective": grad_re,
            "stationarity_term_not_in_certificate": grad_re / mu if mu > 0 else None}}


def _final_lr(task: UnlearningTask) -> float:
    return float(task.schedule.lrs[-1])


class Finetune(UnlearningMethod):
    """Fine-tuning on the retained records from the trained model (uncertified; one request)."""

    name = "finetune"

    def unlearn(self, task: UnlearningTask) -> UnlearningResult:
        from unlearn_audit.baselines import finetune

        bc = task.config.baselines
        lr = bc.finetune_lr or _final_lr(task)
        w, secs = finetune(task.model, task.sgd, task.weights, *task.retain, epochs=bc.finetune_epochs, lr=lr,
                           seed=task.seed + 7)
        return _one_request(task, w, secs, f"fine-tuning: {bc.finetune_epochs} epochs of SGD (lr {lr:.4g}) on the "
                            "retained records from the trained model; uncertified", epochs=bc.finetune_epochs, lr=lr)


class NegGrad(UnlearningMethod):
    """Gradient ascent on the forget set from the trained model (uncertified; one request)."""

    name = "neggrad"

    def unlearn(self, task: UnlearningTask) -> UnlearningResult:
        from unlearn_audit.baselines import neggrad

        bc = task.config.baselines
        lr = bc.neggrad_lr or _final_lr(task)
        w, secs = neggrad(task.model, task.weights, *task.forget, steps=bc.neggrad_steps, lr=lr,
                          weight_norm_bound=task.sgd.weight_norm_bound)
        return _one_request(task, w, secs, f"NegGrad: {bc.neggrad_steps} gradient-ascent steps (lr {lr:.4g}) on "
                            "the forget set's cross-entropy from the trained model; uncertified",
                            steps=bc.neggrad_steps, lr=lr)


class DPSGD(UnlearningMethod):
    """A model trained with Opacus DP-SGD at privacy.epsilon: no deletion step (privacy by training)."""

    name = "dpsgd"

    def unlearn(self, task: UnlearningTask) -> UnlearningResult:
        from unlearn_audit.baselines import train_dpsgd

        bc, pc = task.config.baselines, task.config.privacy
        clip = task.sgd.clipping_norm() if task.sgd.clip == "per_sample" else bc.dpsgd_clip_norm
        res = train_dpsgd(task.model, task.x, task.y, task.sgd, epsilon=pc.epsilon, delta=pc.delta,
                          max_grad_norm=clip, accountant=bc.dpsgd_accountant, seed=task.seed + 11)
        w = res.weights.to(task.weights.dtype)
        return UnlearningResult(
            weights=w, precompute_seconds=res.seconds, certificate=res.certificate(len(task.forget_positions)),
            requests=[], description=f"DP-SGD (Opacus, {res.accountant} accountant): a separately trained model, "
                                     f"per-record epsilon {res.epsilon:.3g} at delta {res.delta:g}; no deletion step",
            extra={"privacy_by_training": True, "precompute_is": "DP-SGD training time", "dp_epsilon": res.epsilon,
                   "dp_delta": res.delta, "noise_multiplier": res.noise_multiplier})


class Identity(UnlearningMethod):
    """Do nothing: return the trained model unchanged (a control; the audit must fail it wherever it has power)."""

    name = "identity"
    description = "do nothing: the original weights, unchanged (control)"

    def unlearn(self, task: UnlearningTask) -> UnlearningResult:
        return _one_request(task, task.weights.clone(), 0.0)

    def paired(self, run: PairedRun) -> torch.Tensor:
        return run.pairs.original_weights()


class Retrain(UnlearningMethod):
    """Exact retraining without U audited as if it were a method (a control; passes up to the test's α). In the
    per-example tests its models come from training seeds independent of the reference retrains'."""

    name = "retrain"
    description = "exact retraining without the forget set, audited as a method (control)"

    def unlearn(self, task: UnlearningTask) -> UnlearningResult:
        from unlearn_audit.training import retrain_without

        start = time.perf_counter()
        w = retrain_without(task.model, task.x, task.y, task.sgd, task.schedule, task.forget_positions,
                            normalisation=task.config.unlearning.normalisation, dtype=task.weights.dtype)
        return _one_request(task, w, time.perf_counter() - start)

    def paired(self, run: PairedRun) -> torch.Tensor:
        return run.independent_retrains()


def _one_request(task: UnlearningTask, w: torch.Tensor, seconds: float, description: str | None = None,
                 **settings) -> UnlearningResult:
    """An uncertified method that handles the whole forget set in one request, with no precompute."""
    return UnlearningResult(weights=w.to(task.weights.dtype), description=description,
                            requests=[RequestTiming(np.arange(len(task.forget_positions)), float(seconds))],
                            extra={**settings, "batch_method": "the whole forget set in one request"})


SAME_MODEL_RTOL = 1e-4
"""Largest relative weight difference ‖w_run − w‖/‖w‖ at which an exported trained run is still the model this audit
trains (float32 round-off of training on another number of threads: 3e-8 measured on digits; another seed or
setting: O(1))."""


class ExternalWeights(UnlearningMethod):
    """Weights unlearned outside the tool (``unlearning.unlearned_weights`` / ``--unlearned-weights``), from the
    trained run the tool exported, for the records of ``unlearning.forget_file``. One model: it cannot be rerun on
    the paired models (``pairable = False``), so the per-example test judges it only as one draw against the
    retrain null (:mod:`unlearn_audit.audit.evidence`), and its verdict can fail but never pass."""

    name = "external"
    pairable = False

    def __init__(self, path: str, trained_run: str | None = None):
        self.path = Path(path)
        self.trained_run = Path(trained_run) if trained_run is not None else None
        self.description = f"weights unlearned outside the tool, read from {self.path.name}"
        self.sha256: str | None = None

    def load(self) -> np.ndarray:
        """The weight vector in the file (a 1-D float .npy; never unpickled); MethodError otherwise."""
        from unlearn_audit.common import file_sha256

        label = f"unlearned weights '{self.path}'"
        if not self.path.is_file():
            raise MethodError(f"{label}: " + ("not a regular file" if self.path.exists() else "file not found"))
        try:
            with open(self.path, "rb") as fh:
                magic = fh.read(6)
        except OSError as err:
            raise MethodError(f"{label}: cannot read ({err.strerror or err})") from None
        if magic != b"\x93NUMPY":          # np.load would open an .npz or try to unpickle anything else
            raise MethodError(f"{label}: not an .npy file (no NumPy header); write the flat weight vector with "
                              "numpy.save")
        try:
            w = np.load(self.path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise MethodError(f"{label}: not a readable .npy array ({' '.join(str(err).split())[:120]}); write it "
                              "with numpy.save") from None
        if not isinstance(w, np.ndarray) or w.ndim != 1 or w.dtype.kind != "f":
            what = f"shape {w.shape} {w.dtype}" if isinstance(w, np.ndarray) else type(w).__name__
            raise MethodError(f"{label}: expected a 1-D float array (the flat weight vector), got {what}")
        self.sha256 = file_sha256(self.path)
        return w

    def check_trained_run(self, task: UnlearningTask) -> dict | None:
        """The trained run's model, checked to be the model this audit trained (and its record ids): MethodError
        otherwise. None when no trained run was named.

        The weights are compared numerically, not by hash: float32 training is reproducible bit for bit only on
        the same number of threads (the reduction order of a GEMM depends on it), so a run exported on a server
        and audited on a laptop differs in the last bits (measured: relative difference 3e-8 on digits between
        1 and 2 threads). A relative difference above :data:`SAME_MODEL_RTOL` is another model."""
        import json

        from unlearn_audit.deletion import find_trained_run

        if self.trained_run is None:
            return None
        folder = find_trained_run(self.trained_run)
        label = f"unlearned weights '{self.path}': trained run '{self.trained_run}'"
        try:
            spec = json.loads((folder / "spec.json").read_text(encoding="utf-8"))
            ids = np.load(folder / "record_ids.npy", allow_pickle=False)
            saved = str(spec["weights_hash"])
            run_w = np.load(folder / "weights.npy", allow_pickle=False)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise MethodError(f"{label}: not a readable trained run ({' '.join(str(err).split())[:120]})") from None
        if array_sha256(run_w) != saved:
            raise MethodError(f"{label}: its weights.npy does not match its spec.json's weights hash (modified or "
                              "damaged)")
        ours = task.weights.detach().double().cpu().numpy()
        if run_w.shape != ours.shape:
            raise MethodError(f"{label} holds another model ({run_w.size} weights, this config trains "
                              f"{ours.size}): the weights were not unlearned from the model this audit judges against")
        scale = max(float(np.linalg.norm(ours)), 1e-300)
        rel = float(np.linalg.norm(run_w.astype(np.float64) - ours)) / scale
        if not rel <= SAME_MODEL_RTOL:                       # NaN weights are another model too
            raise MethodError(f"{label} holds another model (relative difference {rel:.2g} to the model this config "
                              f"trains, more than {SAME_MODEL_RTOL:g}): the weights were not unlearned from the model "
                              "this audit judges against")
        if ids.shape != task.record_ids.shape or not np.array_equal(ids.astype(str), task.record_ids.astype(str)):
            raise MethodError(f"{label}: its record ids differ from this config's training split")
        return {"weights_hash": saved, "relative_difference": rel}

    def unlearn(self, task: UnlearningTask) -> UnlearningResult:
        base = self.check_trained_run(task)
        w = torch.as_tensor(self.load(), dtype=task.weights.dtype)
        return UnlearningResult(weights=w, requests=[], extra={
            "external": {"file": str(self.path), "sha256": self.sha256,
                         "trained_run": str(self.trained_run) if self.trained_run is not None else None,
                         "trained_run_checked": base is not None,
                         "base_weights_hash": base["weights_hash"] if base else None,
                         "base_relative_difference": base["relative_difference"] if base else None}})


METHODS: dict[str, type[UnlearningMethod]] = {
    cls.name: cls for cls in (HFOCU, Identity, Retrain, CertifiedNewtonStep, NewtonStep, InfluenceJackknife,
                              Finetune, NegGrad, DPSGD)}
"""The built-in methods by name (unlearning.methods); plugins are ``"package.module:Class"``."""
EXTERNAL = ExternalWeights.name


# -- the registry and the one dispatcher -------------------------------------------------------------------------
@dataclass
class ResolvedMethod:
    """A method the audit runs: its name in results.json (the built-in name or the plugin spec), the instance,
    and the user code it came from (None for a built-in)."""

    name: str
    method: UnlearningMethod
    plugin: PluginInfo | None = None

    @property
    def label(self) -> str:
        if self.plugin is not None:
            return f"unlearning method '{self.name}'"
        if isinstance(self.method, ExternalWeights):
            return f"unlearned weights '{self.method.path}'"
        return f"method '{self.name}'"

    @property
    def user_code(self) -> bool:
        """Code or data from outside the tool: its failures are the user's input errors (exit 2), not bugs."""
        return self.plugin is not None or isinstance(self.method, ExternalWeights)


def resolve_method(name: str, plugin_path: tuple[str, ...] | list[str] = ()) -> ResolvedMethod:
    """A built-in name, or ``"package.module:Class"`` (imported from the environment or ``plugin_path``, then
    instantiated with no arguments). PluginError / MethodError (one line naming it) when it cannot be used."""
    if name in METHODS:
        return ResolvedMethod(name, METHODS[name]())
    if not is_plugin_spec(name):
        raise MethodError(f"unknown method '{name}'; built-in: {', '.join(METHODS)}, or 'package.module:Class'")
    cls, info = load_plugin(name, plugin_path, what="unlearning method")
    label = f"unlearning method '{name}'"
    if not (isinstance(cls, type) and issubclass(cls, UnlearningMethod)):
        raise MethodError(f"{label}: '{info.attribute}' is not a subclass of "
                          "unlearn_audit.audit.protocol.UnlearningMethod")
    try:
        method = cls()
    except BaseException as err:             # noqa: BLE001 - user code may raise anything
        if not user_failure(err):
            raise
        raise MethodError(f"{label}: instantiating it raised {describe_error(err)}") from None
    return ResolvedMethod(name, method, info)


def resolve_methods(cfg: AuditConfig) -> dict[str, ResolvedMethod]:
    """Every method of the config, in order (``unlearning.methods``, then the external weights when given);
    imports the plugins. Run before any work so that a bad plugin stops the audit at once."""
    out = {name: resolve_method(name, cfg.plugin_path) for name in cfg.unlearning.methods}
    if cfg.unlearning.unlearned_weights is not None:
        ext = ExternalWeights(cfg.unlearning.unlearned_weights, cfg.unlearning.trained_run)
        ext.load()                           # readable, 1-D float: checked now; its length once the model exists
        out[EXTERNAL] = ResolvedMethod(EXTERNAL, ext)
    return out


def task_from_context(ctx: AuditContext, *, with_hfocu: bool = True) -> UnlearningTask:
    """The method's view of the audit's run: the trained run and the forget set, never the retrained model. The
    weights, forget positions and config are the method's own copies; the training tensors, the model, the record
    ids and the schedule are the audit's, shared with the other methods (:func:`run_method` refuses a plugin that
    changes them in place)."""
    return UnlearningTask(model=ctx.model, x=ctx.x, y=ctx.y, record_ids=ctx.train_ids, schedule=ctx.schedule,
                          sgd=ctx.sgd, weights=ctx.w_original.clone(),
                          forget_positions=np.asarray(ctx.forget_positions).copy(),
                          forget_ids=tuple(ctx.forget_ids), seed=ctx.cfg.seed, requests=ctx.cfg.unlearning.requests,
                          config=ctx.cfg.model_copy(deep=True), hfocu=ctx.unlearner if with_hfocu else None)


def _checked_weights(rm: ResolvedMethod, w, d: int, what: str, dtype: torch.dtype, finite: bool = True
                     ) -> torch.Tensor:
    if isinstance(w, np.ndarray):
        if w.dtype.kind not in "fiu":
            raise MethodError(f"{rm.label}: {what} have dtype {w.dtype}, expected a float vector")
        w = torch.as_tensor(w)
    if not isinstance(w, torch.Tensor):
        raise MethodError(f"{rm.label}: returned {type(w).__name__} as {what}; expected a torch.Tensor or numpy "
                          "array of the flat weights, or an UnlearningResult")
    if w.dtype == torch.bool or w.is_complex():
        raise MethodError(f"{rm.label}: {what} have dtype {str(w.dtype).removeprefix('torch.')}, expected a float "
                          "vector")
    if tuple(w.shape) != (d,):
        raise MethodError(f"{rm.label}: {what} have shape {tuple(w.shape)}, expected ({d},) (the model's flat "
                          "weight vector)")
    w = w.detach().to("cpu", dtype)
    if finite and not bool(torch.isfinite(w).all()):
        raise MethodError(f"{rm.label}: {what} contain NaN or inf")
    return w


def _real(value) -> float | None:
    """``value`` as a float when it is a real number (bool excluded), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def _json_ready(rm: ResolvedMethod, value, what: str) -> None:
    try:
        to_jsonable(value)
    except (TypeError, ValueError, RecursionError) as err:
        raise MethodError(f"{rm.label}: {what} is not JSON-ready ({describe_error(err, 120)}); use numbers, strings, "
                          "lists and dicts") from None


def _checked_certificate(rm: ResolvedMethod, res: UnlearningResult, cfg: AuditConfig | None) -> None:
    """A certified result's certificate: a dict whose epsilon and delta are at most the config's (the audit judges
    releases at privacy.epsilon and privacy.delta; a stricter guarantee implies it), whose sigma is the result's,
    and whose sensitivity is finite and >= 0."""
    cert = res.certificate if res.certificate is not None else {}
    if not isinstance(cert, dict):
        raise MethodError(f"{rm.label}: a certified result's certificate must be a dict, got {type(cert).__name__}")
    values = {k: _real(cert.get(k)) for k in ("epsilon", "delta", "sigma", "sensitivity")}
    missing = [k for k, v in values.items() if v is None or math.isnan(v)]
    if missing:
        raise MethodError(f"{rm.label}: a certified result's certificate needs the number(s) {', '.join(missing)}")
    eps, delta, sigma, sens = (values[k] for k in ("epsilon", "delta", "sigma", "sensitivity"))
    assert eps is not None and delta is not None and sigma is not None and sens is not None
    if not (math.isfinite(eps) and eps > 0 and 0 < delta < 1 and math.isfinite(sens) and sens >= 0):
        raise MethodError(f"{rm.label}: certificate epsilon = {eps!r}, delta = {delta!r}, sensitivity = {sens!r}: "
                          "needs epsilon > 0, 0 < delta < 1 and a finite sensitivity >= 0")
    if not (sigma == res.sigma or math.isclose(sigma, res.sigma, rel_tol=1e-6)):
        raise MethodError(f"{rm.label}: the certificate's sigma ({sigma!r}) is not the release's sigma "
                          f"({res.sigma!r})")
    if cfg is not None:
        pc = cfg.privacy
        # a stricter guarantee (ε' ≤ ε, δ' ≤ δ) implies the one the audit judges; a weaker one does not
        if eps > pc.epsilon * (1 + 1e-9) or delta > pc.delta * (1 + 1e-9):
            raise MethodError(f"{rm.label}: the certificate is for epsilon = {eps:g}, delta = {delta:g}, weaker than "
                              f"the audit judges releases at (privacy.epsilon = {pc.epsilon:g}, privacy.delta = "
                              f"{pc.delta:g})")


def checked_result(rm: ResolvedMethod, raw, d: int, dtype: torch.dtype, *, n_forget: int | None = None,
                   cfg: AuditConfig | None = None) -> UnlearningResult:
    """What a method returned, checked: an UnlearningResult (or a bare weight vector) with finite weights of the
    model's size, σ ≥ 0, a certified method's release and certificate (:func:`_checked_certificate`, against
    ``cfg`` when given), request timings that index the forget set (``n_forget`` records) with finite seconds,
    numbers where numbers go, and JSON-ready certificate, extra and request details. MethodError naming it. A
    release may be non-finite (σ = inf: a vacuous certificate, which the verdict fails as such)."""
    res = raw if isinstance(raw, UnlearningResult) else UnlearningResult(weights=raw)
    res.weights = _checked_weights(rm, res.weights, d, "the unlearned weights", dtype)
    if res.released is not None:
        res.released = _checked_weights(rm, res.released, d, "the released weights", dtype, finite=False)
    sigma = _real(res.sigma)
    if sigma is None or not sigma >= 0:
        raise MethodError(f"{rm.label}: sigma must be a number >= 0, got {res.sigma!r}")
    res.sigma = sigma
    if not isinstance(res.certified, (bool, np.bool_)):
        raise MethodError(f"{rm.label}: certified must be True or False, got {res.certified!r}")
    if res.certified:
        if res.released is None or res.sigma <= 0:
            raise MethodError(f"{rm.label}: a certified result needs released weights and sigma > 0")
        _checked_certificate(rm, res, cfg)
    elif res.certificate is not None and not isinstance(res.certificate, dict):
        raise MethodError(f"{rm.label}: certificate must be a dict or None, got {type(res.certificate).__name__}")
    for what in ("precompute_seconds", "storage_bytes"):
        v = _real(getattr(res, what))
        if v is None or not (math.isfinite(v) and v >= 0):
            raise MethodError(f"{rm.label}: {what} must be a finite number >= 0, got {getattr(res, what)!r}")
    if res.description is not None and not isinstance(res.description, str):
        raise MethodError(f"{rm.label}: description must be a string, got {type(res.description).__name__}")
    if not isinstance(res.extra, dict):
        raise MethodError(f"{rm.label}: extra must be a dict, got {type(res.extra).__name__}")
    if res.requests is not None and not isinstance(res.requests, (list, tuple)):
        raise MethodError(f"{rm.label}: requests must be a list of RequestTiming objects, got "
                          f"{type(res.requests).__name__}")
    for k, r in enumerate(res.requests or []):
        if not isinstance(r, RequestTiming):
            raise MethodError(f"{rm.label}: requests must be RequestTiming objects")
        idx = np.asarray(r.indices)
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu") or (
                n_forget is not None and idx.size and (idx.min() < 0 or idx.max() >= n_forget)):
            raise MethodError(f"{rm.label}: request {k}: indices must be a 1-D integer array of positions in "
                              f"task.forget_positions (0..{'k-1' if n_forget is None else n_forget - 1})")
        secs = _real(r.seconds)
        if secs is None or not (math.isfinite(secs) and secs >= 0):
            raise MethodError(f"{rm.label}: request {k}: seconds must be a finite number >= 0, got {r.seconds!r}")
        if not isinstance(r.details, dict):
            raise MethodError(f"{rm.label}: request {k}: details must be a dict, got {type(r.details).__name__}")
        _json_ready(rm, r.details, f"request {k}'s details")
    _json_ready(rm, res.certificate, "its certificate")
    _json_ready(rm, res.extra, "its extra")
    return res


def _shared_state(task: UnlearningTask) -> tuple:
    """What a method must leave as it found it, being the audit's own (shared with the other methods, not copied):
    the version counters of the training tensors and of the model's parameters and buffers (any in-place change
    bumps them), the model's shape, and the digests of the schedule and the record ids."""
    m = task.model
    return ((task.x._version, task.y._version),
            tuple(t._version for t in (*m.module.parameters(), *m.module.buffers())),
            (m.dim, m.n_classes, m.input_shape, tuple(m.names), tuple(m.shapes)),
            task.schedule.content_digest(), array_sha256(np.asarray(task.record_ids)))


def _call_user(rm: ResolvedMethod, what: str, fn, *args):
    """``fn(*args)``: a plugin's failure (any exception, ``sys.exit()``) is a MethodError naming it; a built-in's is a
    bug and propagates."""
    try:
        return fn(*args)
    except (MethodError, PluginError):
        raise
    except BaseException as err:             # noqa: BLE001 - user code may raise anything
        if not (rm.user_code and user_failure(err)):
            raise
        raise MethodError(f"{rm.label}: {what} raised {describe_error(err)}") from None


def run_method(rm: ResolvedMethod, ctx: AuditContext, *, task: UnlearningTask | None = None) -> MethodOutcome:
    """THE dispatcher: run ``rm`` on the audit's run (or on ``task``: a paired model), check what it returned and
    record it (with the method's audit-only :meth:`~UnlearningMethod.diagnostics` on the audit's run). A plugin
    that raises, calls ``sys.exit()``, returns something unusable or changes the audit's shared tensors or model in
    place is a MethodError naming it (exit 2); a built-in that raises is a bug and propagates."""
    main = task is None
    task = task if task is not None else task_from_context(ctx)
    before = _shared_state(task) if rm.user_code else None
    start = time.perf_counter()
    raw = _call_user(rm, "unlearn()", rm.method.unlearn, task)
    seconds = time.perf_counter() - start
    if before is not None and _shared_state(task) != before:
        raise MethodError(f"{rm.label}: unlearn() changed the task's training records, model, schedule or record "
                          "ids in place; they are the audit's own, shared with the other methods: copy before "
                          "changing them")
    res = checked_result(rm, raw, task.model.dim, task.weights.dtype, n_forget=len(task.forget_positions),
                         cfg=ctx.cfg)
    timings = res.requests if res.requests is not None else [
        RequestTiming(np.arange(len(task.forget_positions)), seconds)]
    ids = task.forget_ids
    requests = [{"request_id": f"req-{k + 1:04d}", "n_records": len(r.indices),
                 "hashed_record_ids": [hash_record_id(ids[i], ctx.record_id_key) for i in r.indices],
                 "applied_at": _now(), "seconds": float(r.seconds), **r.details} for k, r in enumerate(timings)]
    extra = dict(res.extra)
    if requests:
        secs = [r["seconds"] for r in requests]
        extra = {"latency_seconds": {"p50": float(np.percentile(secs, 50)), "p99": float(np.percentile(secs, 99)),
                                     "n_requests": len(secs)}, **extra}
    if rm.plugin is not None:
        extra["plugin"] = rm.plugin.to_dict()
    if main:
        diagnostics = _call_user(rm, "diagnostics()", rm.method.diagnostics, res, task, ctx.w_retrain)
        if not isinstance(diagnostics, dict):
            raise MethodError(f"{rm.label}: diagnostics() returned {type(diagnostics).__name__}, expected a dict")
        _json_ready(rm, diagnostics, "what diagnostics() returned")
        extra.update(diagnostics)
    released = res.released if res.released is not None else res.weights.clone()
    return MethodOutcome(
        name=rm.name, description=res.description or rm.method.description or rm.name, weights=res.weights,
        released=released, sigma=float(res.sigma) if res.certified else 0.0, certified=bool(res.certified),
        seconds_per_request=float(np.mean([r["seconds"] for r in requests])) if requests else 0.0,
        precompute_seconds=float(res.precompute_seconds), storage_bytes=int(res.storage_bytes),
        certificate=res.certificate, requests=requests, extra=extra)


def paired_result(rm: ResolvedMethod, run: PairedRun, dtype: torch.dtype) -> torch.Tensor | None:
    """The method's batched form over the N paired models (:meth:`UnlearningMethod.paired`), checked like
    :func:`run_method`'s result: (N, d), finite, the paired models left as they were. None: it has none."""
    pairs = run.pairs
    shared = [t for t in (pairs.original, pairs.approximator, pairs.retrain) if t is not None]
    before = [t._version for t in shared]
    out = _call_user(rm, "paired()", rm.method.paired, run)
    if out is None:
        return None
    if rm.user_code and [t._version for t in shared] != before:
        raise MethodError(f"{rm.label}: paired() changed the paired models' weights in place; they are shared with "
                          "the other methods: copy before changing them")
    if isinstance(out, np.ndarray) and out.dtype.kind in "fiu":
        out = torch.as_tensor(out)
    n, d = pairs.n, pairs.retrain.shape[1]
    if not isinstance(out, torch.Tensor) or out.dtype == torch.bool or out.is_complex() or tuple(out.shape) != (n, d):
        what = (f"shape {tuple(out.shape)} {str(out.dtype).removeprefix('torch.')}"
                if isinstance(out, (torch.Tensor, np.ndarray)) else type(out).__name__)
        raise MethodError(f"{rm.label}: paired() returned {what}; expected a float tensor of shape ({n}, {d}) (one "
                          "flat weight vector per paired model), or None")
    out = out.detach().to("cpu", dtype)
    if not bool(torch.isfinite(out).all()):
        raise MethodError(f"{rm.label}: paired() returned weights that contain NaN or inf")
    return out


def outcome_summary(ctx: AuditContext, out: MethodOutcome) -> dict:
    """The JSON entry of a method in results.json."""
    d = lambda a, b: float((a.double() - b.double()).norm())                                   # noqa: E731
    entry = {"description": out.description, "certified": out.certified,
             "distance_to_retrain": d(out.weights, ctx.w_retrain), "accuracy": ctx.accuracies(out.weights),
             "accuracy_released": ctx.accuracies(out.released), "sigma": out.sigma,
             "seconds_per_request": out.seconds_per_request, "precompute_seconds": out.precompute_seconds,
             "storage_bytes": out.storage_bytes, "certificate": out.certificate, **out.extra}
    return entry
