"""Audit configuration: a TOML file validated by pydantic. Every key has a default; unknown keys are errors.

Errors are reported as one line naming the key path, e.g. ``training.batch_size: must be greater than 0``.
See ``docs/config.md`` for the reference of every key.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """Malformed or invalid configuration (one-line message naming the key path)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    dataset: str = "digits"
    data_dir: str | None = None
    path: str | None = None
    label_column: str | None = None
    train_fraction: float = Field(0.3, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    population_fraction: float = Field(0.5, gt=0, lt=1)
    max_train: int | None = Field(None, gt=0)
    standardize: bool = True
    unit_norm: bool = True

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        from unlearn_audit.data import available_datasets

        names = list(available_datasets())
        if v not in names:
            raise ValueError(f"unknown dataset '{v}'; choose one of: {', '.join(names)}")
        return v

    @model_validator(mode="after")
    def _fractions(self):
        total = self.train_fraction + self.test_fraction + self.population_fraction
        if total > 1 + 1e-9:
            raise ValueError(f"train_fraction + test_fraction + population_fraction = {total:g} exceeds 1")
        return self


class ModelConfig(_Section):
    kind: Literal["softmax", "mlp"] = "softmax"
    hidden: int = Field(64, gt=0)


class TrainingConfig(_Section):
    epochs: int = Field(30, gt=0)
    batch_size: int = Field(32, gt=0)
    lr: float = Field(1.5, gt=0)
    decay: float = Field(0.995, gt=0, le=1)
    lam: float = Field(0.01, ge=0)
    clip: Literal["none", "per_sample", "batch"] = "none"
    clip_norm: float | None = Field(None, gt=0)
    weight_norm_bound: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _clip_needs_norm(self):
        if self.clip != "none" and self.clip_norm is None:
            raise ValueError(f"clip = '{self.clip}' needs clip_norm")
        return self


class UnlearningConfig(_Section):
    forget_fraction: float = Field(0.1, gt=0, lt=1)
    forget_file: str | None = None
    methods: list[Literal["hfocu"]] = ["hfocu"]
    normalisation: Literal["sum", "mean"] = "sum"
    curvature: Literal["exact", "gauss-newton"] = "exact"
    order: Literal["propagate_first", "inject_first"] = "propagate_first"
    requests: int = Field(10, gt=0, description="the forget set is sent as this many deletion requests")


class PrivacyConfig(_Section):
    epsilon: float = Field(1.0, gt=0)
    delta: float = Field(1e-5, gt=0, lt=1)
    mechanism: Literal["analytic", "classic"] = "analytic"

    @model_validator(mode="after")
    def _classic_range(self):
        if self.mechanism == "classic" and self.epsilon >= 1:
            raise ValueError("mechanism = 'classic' is only valid for epsilon < 1; use 'analytic'")
        return self


class AuditSection(_Section):
    alpha: float = Field(0.05, gt=0, lt=0.5)
    margin: float = Field(0.015, gt=0, lt=0.5)
    attacks: list[Literal["loss"]] = ["loss"]
    sweep_sigmas: list[float] = Field(default_factory=lambda: [0.0, 0.01, 0.03, 0.1, 0.3, 1.0])

    @field_validator("sweep_sigmas")
    @classmethod
    def _nonneg(cls, v):
        if any(s < 0 for s in v):
            raise ValueError("every sigma must be >= 0")
        return v


class AuditConfig(_Section):
    """The whole audit. ``seed`` drives splits, initialisation, schedule, forget set and noise."""

    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    unlearning: UnlearningConfig = UnlearningConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    audit: AuditSection = AuditSection()

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()

    def to_toml(self) -> str:
        return dump_toml(self.model_dump(mode="json"))


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    path = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    msg = msg.removeprefix("Value error, ")
    more = len(err.errors()) - 1
    return f"{path}: {msg}" + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


def config_from_dict(data: dict) -> AuditConfig:
    try:
        return AuditConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


def load_config(path: str | Path | None) -> AuditConfig:
    """Read and validate a TOML config; ``None`` gives the defaults (the bundled digits audit)."""
    if path is None:
        return AuditConfig()
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{p}: malformed TOML: {err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a UTF-8 text file") from None
    return config_from_dict(data)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dump_toml(data: dict) -> str:
    """Minimal TOML writer for the resolved config (scalars first, then one table per section; None is omitted)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict) and v is not None]
    for k, v in data.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines += [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items() if vv is not None]
    return "\n".join(lines) + "\n"
