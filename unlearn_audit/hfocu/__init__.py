"""HF-OCU: Hessian-free online certified unlearning (DESIGN §2.3) — the engine only.

curvature (HVP operators) → recursion (time-outer), chunked (chunk-outer), reverse (the backward walk), replay → layouts
(the four as strategies shared by the unlearner and the sharded precompute; ``auto`` by a cost model) → store (the
one on-disk approximator format) → constants (the run's certificate constants) → unlearner (fit / delete / release).
Storage of trained runs, the ledger and the deletion service live in :mod:`unlearn_audit.deletion`, which builds on
this package (never the other way round).
"""

from unlearn_audit.hfocu.curvature import AutodiffHessian, GaussNewton, SoftmaxClosedForm, make_curvature, reference_hvp
from unlearn_audit.hfocu.layouts import (
    ChunkOuter,
    Layout,
    LayoutChoice,
    Replay,
    ReverseOuter,
    TimeOuter,
    choose_layout,
    make_layout,
    resolve_layout,
)
from unlearn_audit.hfocu.recursion import ApproximatorRecursion
from unlearn_audit.hfocu.unlearner import DeletionReceipt, HFOCUUnlearner, UnlearningError

__all__ = ["ApproximatorRecursion", "AutodiffHessian", "ChunkOuter", "DeletionReceipt", "GaussNewton",
           "HFOCUUnlearner", "Layout", "LayoutChoice", "Replay", "ReverseOuter", "SoftmaxClosedForm", "TimeOuter",
           "UnlearningError", "choose_layout", "make_curvature", "make_layout", "reference_hvp", "resolve_layout"]
