"""The shipped example configurations validate, and examples/digits.toml is exactly the default audit."""

from __future__ import annotations

from pathlib import Path

import pytest

from unlearn_audit.config import AuditConfig, load_config

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.toml"))


def test_there_are_examples():
    assert {p.stem for p in EXAMPLES} >= {"digits", "mnist_lr", "fashion_cnn"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_validates(path):
    load_config(path)


def test_digits_example_is_the_default_audit():
    assert load_config(EXAMPLES[[p.stem for p in EXAMPLES].index("digits")]) == AuditConfig()


def test_cnn_example_keeps_approximators_for_the_forget_set_only():
    cfg = load_config(EXAMPLES[[p.stem for p in EXAMPLES].index("fashion_cnn")])
    assert cfg.model.kind == "cnn" and cfg.unlearning.mode == "candidates"
