"""Shared fixtures: real digits data, prepared as the default audit prepares it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_splits():
    from unlearn_audit.data import load_dataset, prepare, split_dataset

    ds = load_dataset("digits")
    return prepare(split_dataset(ds, train_fraction=0.3, test_fraction=0.2, population_fraction=0.5, seed=0),
                   standardize=True, unit_norm=True)


@pytest.fixture(scope="session")
def digits_train(digits_splits):
    tr = digits_splits.train
    return torch.as_tensor(tr.x), torch.as_tensor(tr.y), np.asarray(tr.ids)
