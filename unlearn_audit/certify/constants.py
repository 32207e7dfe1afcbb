"""The one path from a run's certificate constants to a sensitivity certificate (DESIGN §2.4).

A finished training leaves the constants the bound needs; they are typed here, saved with a trained run, and turned
into a :class:`~unlearn_audit.certify.bounds.SensitivityCertificate` for a forget set by
:func:`certificate_from_constants`. The in-process unlearner (:class:`~unlearn_audit.hfocu.HFOCUUnlearner`) and the
trained run served by the deletion service (:class:`~unlearn_audit.deletion.TrainedRun`) both call it, so they cannot
certify differently.

    consts = SoftmaxRegressionConstants(lam=0.01, max_feature_norm=3.2, n_classes=10, clip="none", ...)
    cert = certificate_from_constants(schedule, forget_positions, consts, order="propagate_first")

Kinds: ``softmax_regression`` (analytic constants from λ, max ‖x‖ and the clipping/projection settings) and
``recursion`` (ρ and G given with their provenance, e.g. measured by power iteration along the trajectory).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Union

import numpy as np

from unlearn_audit.certify.aposteriori import (
    MeasuredReplayTerms,
    NotCertifiable,
    ReplayTerms,
    a_posteriori_certificate,
    measured_certificate,
    plug_in_terms,
    unit_roundoff,
)
from unlearn_audit.certify.bounds import (
    SOURCES,
    SensitivityCertificate,
    recursion_certificate,
    softmax_regression_constants,
)
from unlearn_audit.certify.errors import CertificationError
from unlearn_audit.training.schedule import Schedule

__all__ = ["BATCH_CLIP_REFUSED", "BOUNDS", "CertificateConstants", "Constant", "RecursionConstants",
           "SoftmaxRegressionConstants", "certificate_from_constants", "constants_from_dict"]

BATCH_CLIP_REFUSED = ("batch-gradient clipping is not covered by the per-sample recursion bound: train with "
                      "per-sample clipping or none to get a certificate")
CLIP_MODES = ("none", "per_sample", "batch")


@dataclass(frozen=True)
class Constant:
    """One constant of a bound with its provenance: ``source`` is enforced | analytic | measured."""

    value: float
    source: str
    how: str

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise CertificationError(f"constant source must be one of {', '.join(SOURCES)}, got {self.source!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Constant":
        return cls(float(d["value"]), str(d["source"]), str(d["how"]))


@dataclass(frozen=True)
class SoftmaxRegressionConstants:
    """Multinomial logistic regression with bias and L2 λ: the analytic bound of
    :func:`~unlearn_audit.certify.bounds.softmax_regression_constants`.

    Attributes:
        lam: λ of the training objective. max_feature_norm: max ‖x‖ over the training set (no bias).
        n_classes: K. clip: the training's clipping mode (``batch`` is refused). clip_norm: C when clipping.
        weight_norm_bound: R when training projects onto ‖w‖ ≤ R. measured_max_weight_norm: max_t ‖w_t‖ seen in
        training (a measured G candidate). train_dtype: dtype of the training arithmetic (rounding slack of the
        a-posteriori bound). n_features: D (its rounding model; unset = 10⁵, conservative).
    """

    lam: float
    max_feature_norm: float
    n_classes: int
    clip: str = "none"
    clip_norm: float | None = None
    weight_norm_bound: float | None = None
    measured_max_weight_norm: float | None = None
    train_dtype: str = "float32"
    n_features: int | None = None
    kind: str = "softmax_regression"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RecursionConstants:
    """ρ ≥ ‖I − η_t H_t‖ and G ≥ every injected per-sample gradient norm, each with its provenance, for any model
    (the first-order recursion of :func:`~unlearn_audit.certify.bounds.recursion_certificate`)."""

    model: str
    rho: Constant
    G: Constant
    clip: str = "none"
    kind: str = "recursion"

    def to_dict(self) -> dict:
        return asdict(self)


CertificateConstants = Union[SoftmaxRegressionConstants, RecursionConstants]


def constants_from_dict(d: Mapping[str, Any]) -> CertificateConstants:
    """The typed constants from their saved JSON (``to_dict()``). Raises CertificationError naming what is wrong."""
    if not isinstance(d, Mapping):
        raise CertificationError("certificate constants must be a JSON object")
    kind = d.get("kind")
    try:
        if kind == "softmax_regression":
            opt = lambda k: None if d.get(k) is None else float(d[k])          # noqa: E731
            return SoftmaxRegressionConstants(
                lam=float(d["lam"]), max_feature_norm=float(d["max_feature_norm"]), n_classes=int(d["n_classes"]),
                clip=str(d.get("clip", "none")), clip_norm=opt("clip_norm"), weight_norm_bound=opt("weight_norm_bound"),
                measured_max_weight_norm=opt("measured_max_weight_norm"),
                train_dtype=str(d.get("train_dtype", "float32")),
                n_features=None if d.get("n_features") is None else int(d["n_features"]))
        if kind == "recursion":
            return RecursionConstants(model=str(d.get("model", "generic")), rho=Constant.from_dict(d["rho"]),
                                      G=Constant.from_dict(d["G"]), clip=str(d.get("clip", "none")))
    except (KeyError, TypeError, ValueError) as err:
        raise CertificationError(f"certificate constants of kind '{kind}' are malformed ({type(err).__name__}: "
                                 f"{err})") from None
    raise CertificationError(f"certificate constants kind '{kind}' is not known")


BOUNDS = ("a_posteriori", "worst_case")


def certificate_from_constants(schedule: Schedule, forget_positions, constants: CertificateConstants, *,
                               order: str = "propagate_first", bound: str = "worst_case",
                               replay: Callable[[np.ndarray], ReplayTerms | MeasuredReplayTerms] | None = None
                               ) -> SensitivityCertificate:
    """Δ(U) for U = ``forget_positions`` (training positions) on ``schedule``, from the run's constants.

    ``order``: the approximators' update order (``inject_first`` changes the approximator half of the bound).
    ``bound``: ``worst_case`` (DESIGN §2.4, the first-order recursion 2 b_T) or ``a_posteriori`` (§2.4b). The
    a-posteriori bound uses ``replay(positions)`` (the engine's float64 replay of U along the recorded trajectory)
    when given: :class:`ReplayTerms` for softmax regression (rigorous), :class:`MeasuredReplayTerms` for other models
    (the same recursion with measured constants, labelled measured). Without a replay, softmax regression gets the
    plug-in variant ‖A_t‖ ≤ b_t from the constants alone (looser; refused with binding clipping or projection) and
    other models the worst-case recursion with their measured constants.
    Raises CertificationError for batch-gradient clipping (not covered by the per-sample bound), bad constants, or a
    bound that overflows; NotCertifiable when the a-posteriori recursion blows up (the message names the worst-case
    alternative).
    """
    if bound not in BOUNDS:
        raise CertificationError(f"bound must be one of {', '.join(BOUNDS)}, got {bound!r}")
    worst = _worst_case(schedule, forget_positions, constants, order=order)
    if bound == "worst_case" or (not isinstance(constants, SoftmaxRegressionConstants) and replay is None):
        return worst
    if order != "propagate_first":
        raise CertificationError("the a-posteriori bound certifies the derivation's order (propagate, then inject); "
                                 "with order 'inject_first' use bound 'worst_case'")
    pos = np.unique(np.asarray(forget_positions, dtype=np.int64).reshape(-1))
    if replay is None:
        assert isinstance(constants, SoftmaxRegressionConstants)
        return a_posteriori_certificate(_plug_in(schedule, pos, constants, worst), schedule, pos, worst_case=worst)
    terms = replay(pos)
    if isinstance(terms, MeasuredReplayTerms):
        return measured_certificate(terms, schedule, pos, worst_case=worst)
    return a_posteriori_certificate(terms, schedule, pos, worst_case=worst)


def _plug_in(schedule: Schedule, pos: np.ndarray, c: SoftmaxRegressionConstants,
             worst: SensitivityCertificate) -> ReplayTerms:
    G = float(worst.constants["G"]["value"])
    x2 = c.max_feature_norm ** 2 + 1.0
    if c.weight_norm_bound is not None:
        raise NotCertifiable("not certifiable without the recorded trajectory: the a-posteriori bound's projection "
                             "term is computed along it (this run has none); use bound 'worst_case'")
    if c.clip == "per_sample" and c.clip_norm is not None and c.clip_norm <= G:
        raise NotCertifiable("not certifiable without the recorded trajectory: per-sample clipping may bind "
                             f"(C = {c.clip_norm:g} <= the gradient bound {G:.4g}); use bound 'worst_case'")
    W = c.measured_max_weight_norm if c.measured_max_weight_norm is not None else (c.weight_norm_bound or 0.0)
    return plug_in_terms(schedule, pos, lam=c.lam, G=G, n_classes=c.n_classes,
                         n_features=c.n_features if c.n_features is not None else 10 ** 5,
                         u=unit_roundoff(c.train_dtype), state_norm=W + worst.sensitivity, weight_norm=W,
                         max_x2=x2)


def _worst_case(schedule: Schedule, forget_positions, constants: CertificateConstants, *,
                order: str) -> SensitivityCertificate:
    if constants.clip not in CLIP_MODES:
        raise CertificationError(f"clip must be one of {', '.join(CLIP_MODES)}, got {constants.clip!r}")
    if constants.clip == "batch":
        raise CertificationError(BATCH_CLIP_REFUSED)
    if isinstance(constants, SoftmaxRegressionConstants):
        return softmax_regression_constants(
            schedule, forget_positions, constants.lam, constants.max_feature_norm, constants.n_classes,
            clip_norm=constants.clip_norm if constants.clip == "per_sample" else None,
            weight_norm_bound=constants.weight_norm_bound,
            measured_max_weight_norm=constants.measured_max_weight_norm, clip_mode="per_sample", order=order)
    if isinstance(constants, RecursionConstants):
        rho, g = constants.rho, constants.G
        return recursion_certificate(schedule, forget_positions, rho.value, g.value, rho_source=rho.source,
                                     rho_how=rho.how, G_source=g.source, G_how=g.how, model=constants.model,
                                     order=order)
    raise CertificationError(f"unknown certificate constants {type(constants).__name__}")
