"""Training that records its schedule, and exact retraining by replay."""

from unlearn_audit.training.device import resolve_device
from unlearn_audit.training.schedule import Schedule
from unlearn_audit.training.sgd import (
    SGDConfig,
    StepInfo,
    TrainResult,
    per_sample_gradients,
    retrain_without,
    train_sgd,
    update_map,
)

__all__ = ["Schedule", "SGDConfig", "StepInfo", "TrainResult", "per_sample_gradients", "resolve_device",
           "retrain_without", "train_sgd", "update_map"]
