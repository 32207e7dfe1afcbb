"""HF-OCU: Hessian-free online certified unlearning (DESIGN §2.3)."""

from unlearn_audit.hfocu.curvature import (AutodiffHessian, GaussNewton, SoftmaxClosedForm, make_curvature,
                                           reference_hvp)
from unlearn_audit.hfocu.recursion import ApproximatorRecursion
from unlearn_audit.hfocu.unlearner import DeletionReceipt, HFOCUUnlearner, UnlearningError

__all__ = ["ApproximatorRecursion", "AutodiffHessian", "DeletionReceipt", "GaussNewton", "HFOCUUnlearner",
           "SoftmaxClosedForm", "UnlearningError", "make_curvature", "reference_hvp"]
