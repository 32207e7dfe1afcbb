"""Certification of HF-OCU unlearning (DESIGN §2.4): sensitivity bounds and Gaussian noise calibration/release."""

from unlearn_audit.certify.aposteriori import (
    NotCertifiable,
    ReplayTerms,
    a_posteriori_certificate,
    a_posteriori_recursion,
    plug_in_terms,
)
from unlearn_audit.certify.bounds import (
    SensitivityCertificate,
    forget_digest,
    power_iteration_rho,
    power_norm,
    recursion_certificate,
    sensitivity_recursion,
    softmax_regression_constants,
)
from unlearn_audit.certify.constants import (
    BATCH_CLIP_REFUSED,
    BOUNDS,
    CertificateConstants,
    Constant,
    RecursionConstants,
    SoftmaxRegressionConstants,
    certificate_from_constants,
    constants_from_dict,
)
from unlearn_audit.certify.errors import CertificationError
from unlearn_audit.certify.mechanisms import (
    analytic_gaussian_delta,
    analytic_gaussian_epsilon,
    analytic_gaussian_sigma,
    calibrate,
    classic_gaussian_sigma,
    release,
    sigma_text,
)

__all__ = [
    "BATCH_CLIP_REFUSED",
    "BOUNDS",
    "CertificateConstants",
    "CertificationError",
    "Constant",
    "RecursionConstants",
    "SoftmaxRegressionConstants",
    "certificate_from_constants",
    "constants_from_dict",
    "NotCertifiable",
    "ReplayTerms",
    "a_posteriori_certificate",
    "a_posteriori_recursion",
    "plug_in_terms",
    "SensitivityCertificate",
    "analytic_gaussian_delta",
    "analytic_gaussian_epsilon",
    "analytic_gaussian_sigma",
    "calibrate",
    "classic_gaussian_sigma",
    "forget_digest",
    "power_iteration_rho",
    "power_norm",
    "recursion_certificate",
    "release",
    "sensitivity_recursion",
    "sigma_text",
    "softmax_regression_constants",
]
