"""Certification of HF-OCU unlearning (DESIGN §2.4): sensitivity bounds and Gaussian noise calibration/release."""

from unlearn_audit.certify.bounds import (
    SensitivityCertificate,
    forget_digest,
    power_iteration_rho,
    recursion_certificate,
    sensitivity_recursion,
    softmax_regression_constants,
)
from unlearn_audit.certify.errors import CertificationError
from unlearn_audit.certify.mechanisms import (
    analytic_gaussian_delta,
    analytic_gaussian_epsilon,
    analytic_gaussian_sigma,
    calibrate,
    classic_gaussian_sigma,
    release,
)

__all__ = [
    "CertificationError",
    "SensitivityCertificate",
    "analytic_gaussian_delta",
    "analytic_gaussian_epsilon",
    "analytic_gaussian_sigma",
    "calibrate",
    "classic_gaussian_sigma",
    "forget_digest",
    "power_iteration_rho",
    "recursion_certificate",
    "release",
    "sensitivity_recursion",
    "softmax_regression_constants",
]
