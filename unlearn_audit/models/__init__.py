"""Model zoo. Every model is used through :class:`FunctionalModel`, which views its parameters as one flat vector
``w`` (the unlearning math works on flat vectors) and evaluates it with ``torch.func.functional_call``.

Models whose per-record loss depends on the other records of its batch (BatchNorm in training mode, dropout) are
refused: HF-OCU's approximators assume a per-sample loss (DESIGN §2.1).
"""

from unlearn_audit.models.functional import FunctionalModel, ModelError
from unlearn_audit.models.zoo import MODEL_KINDS, build_model

__all__ = ["FunctionalModel", "ModelError", "MODEL_KINDS", "build_model"]
