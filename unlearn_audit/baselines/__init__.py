"""Baselines HF-OCU is compared with (DESIGN §2.5), all on flat float64 parameter vectors:

* :class:`NewtonStep` (``ns``, Sekhari et al. 2021) and :class:`InfluenceJackknife` (``ij``): exact Cholesky in
  float64 for small d, conjugate gradients with Hessian-vector products otherwise; indefinite Hessians reported.
* :class:`CertifiedNewtonStep` (``cns``, Zhang et al. ICML 2024): one Newton step on the retained data per request,
  inverse by LiSSA, the paper's error bound with measured constants, σ from the analytic Gaussian mechanism.
* :func:`finetune`, :func:`neggrad`: uncertified contrast methods.
* :func:`train_dpsgd`: DP-SGD with Opacus, "privacy by training".

The audit registers each as a method (``unlearn_audit.audit.methods.METHODS``).
"""

from unlearn_audit.baselines.cns import CertifiedNewtonStep, hessian_lipschitz
from unlearn_audit.baselines.dpsgd import DPSGDResult, train_dpsgd
from unlearn_audit.baselines.hessian import (
    DataHessian,
    SolveInfo,
    SPDFactor,
    conjugate_gradient,
    extreme_eigenvalues,
    factor_spd,
    softmax_dense_hessian,
    solve_with_damping,
)
from unlearn_audit.baselines.lissa import LissaInfo, chain_hvps, lissa_solve
from unlearn_audit.baselines.newton import InfluenceJackknife, NewtonStep
from unlearn_audit.baselines.simple import finetune, neggrad

__all__ = ["CertifiedNewtonStep", "DPSGDResult", "DataHessian", "InfluenceJackknife", "LissaInfo", "NewtonStep",
           "SPDFactor", "SolveInfo", "chain_hvps", "conjugate_gradient", "extreme_eigenvalues", "factor_spd",
           "finetune", "hessian_lipschitz", "lissa_solve", "neggrad", "softmax_dense_hessian",
           "solve_with_damping", "train_dpsgd"]
