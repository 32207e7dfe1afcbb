"""The results schema (docs/results.md): what ``audit/run.py`` writes to results.json and ``report/`` reads back.

pydantic models, no torch: the audit validates its results against :class:`AuditResults` before anything is written
(an unknown top-level key, a private key, or a malformed verdict is a bug caught there, not in a reader), and the
report reads the verdict's two answers and the per-example section through the same models. Sections documented
field by field in docs/results.md but not modelled here yet stay plain JSON objects (``dict``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "2.0"

Status = Literal["pass", "fail", "inconclusive"]


class _Open(BaseModel):
    """A section whose documented fields are typed; extra documented fields pass through unchanged."""

    model_config = ConfigDict(extra="allow")


class Answer(BaseModel):
    """One of the verdict's two questions (forgetting, release)."""

    model_config = ConfigDict(extra="forbid")
    question: str
    status: Literal["pass", "fail", "inconclusive", "not applicable"]
    reasons: list[str] = Field(default_factory=list)


class VerdictSection(_Open):
    status: Status = "inconclusive"
    exit_code: int | None = None
    method: str | None = None
    failed_questions: list[str] = Field(default_factory=list)
    forgetting: Answer | None = None
    release: Answer | None = None
    reasons: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    test: str | None = None
    alpha: float | None = None
    margin: float | None = None
    max_accuracy_loss: float | None = None
    n_pairs: int | None = None
    n_records: int | None = None


class GroupSection(_Open):
    """One group of the per-example tests (a method in one state, or a control) against the reference retrains."""

    name: str
    state: Literal["noiseless", "released"]
    sigma: float | None = None
    accuracy_test_mean: float | None = None
    accuracy_test_sd: float | None = None
    signals: dict[str, dict[str, Any]] = Field(default_factory=dict)


class PerExampleSection(_Open):
    protocol: str = ""
    n_pairs: int
    n_records: int
    margin: float
    alpha: float
    delta: float
    chance_accuracy: float | None = None
    signals: dict[str, str] = Field(default_factory=dict)
    pair_seeds: list[int] = Field(default_factory=list)
    reference_seeds: list[int] = Field(default_factory=list)
    training_seconds: float | None = None
    notes: list[str] = Field(default_factory=list)
    groups: list[GroupSection] = Field(default_factory=list)


class AuditResults(BaseModel):
    """results.json. Writers must produce exactly these top-level keys (``extra="forbid"``); readers get defaults
    for absent optional sections so that a minimal file still renders."""

    model_config = ConfigDict(extra="forbid")
    schema_version: str
    tool: dict[str, Any] = Field(default_factory=dict)
    run: dict[str, Any] = Field(default_factory=dict)
    environment: dict[str, Any] = Field(default_factory=dict)
    disclaimer: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
    model: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    forget_set: dict[str, Any] = Field(default_factory=dict)
    primary_method: str | None = None
    certificate: dict[str, Any] | None = None
    methods: dict[str, dict[str, Any]] = Field(default_factory=dict)
    attacks: list[dict[str, Any]] = Field(default_factory=list)
    equivalence: list[dict[str, Any]] = Field(default_factory=list)
    per_example: PerExampleSection | None = None
    empirical_epsilon: dict[str, Any] = Field(default_factory=dict)
    tradeoff: list[dict[str, Any]] = Field(default_factory=list)
    capacity: dict[str, Any] | None = None
    verdict: VerdictSection = Field(default_factory=VerdictSection)
