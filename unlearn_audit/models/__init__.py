"""Model zoo. Every model is used through :class:`FunctionalModel`, which views its parameters as one flat vector
``w`` (the unlearning math works on flat vectors) and evaluates it with ``torch.func.functional_call``.

Models whose per-record loss depends on the other records of its batch (BatchNorm in training mode, dropout) are
refused: HF-OCU's approximators assume a per-sample loss (DESIGN §2.1). Your own architecture: ``kind = "custom"``
with a factory ``"package.module:function"`` (:func:`build_custom_model`), checked the same way and more
(:func:`probe_model`).
"""

from unlearn_audit.models.functional import FunctionalModel, ModelError, probe_model
from unlearn_audit.models.zoo import MODEL_KINDS, build_custom_model, build_model

__all__ = ["FunctionalModel", "ModelError", "MODEL_KINDS", "build_custom_model", "build_model", "probe_model"]
