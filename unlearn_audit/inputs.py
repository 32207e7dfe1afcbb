"""From a config to a run's inputs: the data splits, the model and the SGD settings (one mapping, used by the audit
and by the sharded precompute, so both train exactly the same model on exactly the same records).

    inp = build_inputs(cfg)
    HFOCUUnlearner(inp.model, inp.sgd).fit(inp.x, inp.y, inp.ids)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from unlearn_audit.config import AuditConfig
from unlearn_audit.data import Dataset, Splits, load_dataset, prepare, split_dataset
from unlearn_audit.models import FunctionalModel, build_model
from unlearn_audit.training import SGDConfig

__all__ = ["RunInputs", "build_inputs", "model_from_config", "sgd_config", "tensors"]


def tensors(split) -> tuple[torch.Tensor, torch.Tensor]:
    """(x float32, y int64) tensors of a split (train, test or population)."""
    return (torch.as_tensor(np.asarray(split.x), dtype=torch.float32),
            torch.as_tensor(np.asarray(split.y), dtype=torch.int64))


def sgd_config(cfg: AuditConfig) -> SGDConfig:
    """The ``training`` section (and the run's seed) as the SGD settings."""
    tc = cfg.training
    return SGDConfig(epochs=tc.epochs, batch_size=tc.batch_size, lr=tc.lr, decay=tc.decay, lam=tc.lam, clip=tc.clip,
                     clip_norm=tc.clip_norm, weight_norm_bound=tc.weight_norm_bound, seed=cfg.seed)


def model_from_config(cfg: AuditConfig, input_shape: tuple[int, ...], n_classes: int, seed: int) -> FunctionalModel:
    """The ``model`` section's model for records of ``input_shape``, initialised from ``seed``: a zoo model, or
    the user's ``model.factory`` (imported from the environment or ``plugin_path``, checked before use). Every
    model the audit trains (target, paired models, shadows) comes from here."""
    mc = cfg.model
    return build_model(mc.kind, tuple(input_shape), n_classes, seed=seed, hidden=mc.hidden, factory=mc.factory,
                       plugin_path=cfg.plugin_path)


@dataclass
class RunInputs:
    """What a config trains on and with. ``x``/``y``/``ids``: the training split (positions index them); ``splits``
    also holds the test and population splits."""

    dataset: Dataset
    splits: Splits
    model: FunctionalModel
    sgd: SGDConfig
    x: torch.Tensor
    y: torch.Tensor
    ids: np.ndarray

    @property
    def data_digest(self) -> str:
        """Digest of the training split (records, labels, ids)."""
        return self.splits.train.digest()


def build_inputs(cfg: AuditConfig) -> RunInputs:
    """Load and split the data (``data`` section, ``seed``), the SGD settings (``training``) and the model
    (``model``, initialised from ``seed``)."""
    dc = cfg.data
    ds = load_dataset(dc.dataset, data_dir=dc.data_dir, path=dc.path, label_column=dc.label_column,
                      id_column=dc.id_column)
    splits = prepare(split_dataset(ds, train_fraction=dc.train_fraction, test_fraction=dc.test_fraction,
                                   population_fraction=dc.population_fraction, seed=cfg.seed,
                                   max_train=dc.max_train), standardize=dc.standardize, unit_norm=dc.unit_norm)
    train = splits.train
    sgd = sgd_config(cfg)
    model = model_from_config(cfg, train.feature_shape, ds.n_classes, cfg.seed)
    x, y = tensors(train)
    return RunInputs(ds, splits, model, sgd, x, y, np.asarray(train.ids).astype(str))
