"""Audit configuration: a TOML file validated by pydantic. Every key has a default; unknown keys are errors.

Errors are reported as one line naming the key path, e.g. ``training.batch_size: must be greater than 0``.
See ``docs/config.md`` for the reference of every key.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from unlearn_audit.common import json_digest

# Upper bounds on sizes that would overflow or never finish (a seed beyond 64-bit RNG state, a step size whose first
# update overflows float32, a hidden layer or an epoch count no machine finishes). The error names the bound.
MAX_SEED = 2**32 - 1
MAX_EPOCHS = 10_000
MAX_HIDDEN = 65_536
MAX_STEP_SIZE = 1000.0
MAX_NORM = 1e6


class ConfigError(ValueError):
    """Malformed or invalid configuration (one-line message naming the key path)."""


class _Section(BaseModel):
    # strict: TOML is typed, so "30" for an int or "yes" for a bool is an error, not a silent conversion;
    # allow_inf_nan=False: TOML's inf/nan are refused; field docstrings are the key's documentation (docs/config.md).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False,
                              use_attribute_docstrings=True)


class DataConfig(_Section):
    """Which records, and how they are split into train / test / population (seeded by `seed`)."""

    dataset: str = "digits"
    """Data set: digits, breast_cancer, wine, mnist5000, fashion_mnist, mnist_idx, cifar10_local, npz, csv,
    parquet or image_folder (all read offline; `unlearn_audit.data.available_datasets()` describes each)."""
    data_dir: str | None = None
    """Folder of data files: required for mnist_idx, cifar10_local and image_folder (one sub-folder of images per
    class; a record's id is its path in the folder, e.g. "cat/0001.png"), optional for fashion_mnist (default: the
    Debian package's folder); refused for the other data sets."""
    path: str | None = None
    """Your data file: required for npz (arrays x, y, optional ids), csv and parquet; refused for the other data
    sets."""
    label_column: str | None = None
    """Name of the label column of a csv or parquet file (unset = 'label'); csv and parquet only."""
    id_column: str | None = None
    """Name of the record-id column of a csv or parquet file (unset = the column 'id' if there is one, else ids
    are derived as "<file stem>:<row>"); csv and parquet only. Deletion requests name these ids."""
    train_fraction: float = Field(0.3, gt=0, lt=1)
    """Fraction of the records the target model is trained on (the forget set is drawn from them)."""
    test_fraction: float = Field(0.2, gt=0, lt=1)
    """Fraction held out, never trained on: test accuracy and the attacks' threshold calibration."""
    population_fraction: float = Field(0.5, gt=0, lt=1)
    """Fraction never trained on that serves as the attacks' non-members (label 0). The three fractions may sum to
    at most 1."""
    max_train: int | None = Field(None, gt=0, le=10**9)
    """Cap on the number of training records after the split (unset = no cap)."""
    standardize: bool = True
    """Standardise features with the training split's mean and standard deviation."""
    unit_norm: bool = True
    """Project every record onto the unit L2 ball (‖x‖ ≤ 1). Keeps the certificate's constants (feature norm, loss
    smoothness, gradient bound) small; without it the sensitivity bound, and so the noise, grows with ‖x‖."""

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

    @model_validator(mode="after")
    def _dataset_options(self):
        needs = {"npz": "path", "csv": "path", "parquet": "path", "mnist_idx": "data_dir", "cifar10_local": "data_dir",
                 "image_folder": "data_dir"}
        takes = {"npz": {"path"}, "csv": {"path", "label_column", "id_column"},
                 "parquet": {"path", "label_column", "id_column"}, "mnist_idx": {"data_dir"},
                 "cifar10_local": {"data_dir"}, "fashion_mnist": {"data_dir"},
                 "image_folder": {"data_dir"}}.get(self.dataset, set())
        for key in ("data_dir", "path", "label_column", "id_column"):
            if getattr(self, key) is not None and key not in takes:
                raise ValueError(f"{key}: dataset '{self.dataset}' does not take {key}")
        need = needs.get(self.dataset)
        if need and getattr(self, need) is None:
            raise ValueError(f"{need}: dataset '{self.dataset}' needs {need}")
        if self.path is not None and not Path(self.path).is_file():
            raise ValueError(f"path: file not found: {self.path}")
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise ValueError(f"data_dir: folder not found: {self.data_dir}")
        return self


class ModelConfig(_Section):
    """The target model (trained by SGD while the HF-OCU approximators are kept)."""

    kind: Literal["softmax", "mlp", "cnn", "lenet5", "resnet18", "custom"] = "softmax"
    """Model: softmax (multinomial logistic regression: closed-form Hessian-vector products, analytic certificate
    constants); mlp (one tanh hidden layer); cnn (the HF-OCU paper's small CNN, 21,840 parameters on 28×28 inputs);
    lenet5 (61,706 parameters); resnet18 (GroupNorm instead of BatchNorm, 11.2M parameters, no pretrained weights).
    All but softmax use vmapped autodiff Hessian-vector products and measured certificate constants. LiRA's
    shadows are copies of the target's own architecture, trained many at once (torch.func.vmap)."""
    hidden: int = Field(64, gt=0, le=MAX_HIDDEN)
    """Hidden units of the mlp (ignored by the other models)."""
    factory: str | None = None
    """Your architecture: "package.module:function", a function called as function(input_shape, n_classes) that
    returns a torch.nn.Module mapping a batch of records (m, *input_shape) to logits (m, n_classes); input_shape is
    one record's shape as the data set gives it (flat for every built-in loader). Setting it sets kind = "custom".
    Importing the module RUNS ITS CODE: it is imported only because this key names it, from the installed packages
    or the top-level plugin_path folders. The module is checked before training (refused with the reason:
    BatchNorm in training mode, dropout, any layer that makes a record's output depend on its batch, no vmap or
    Hessian-vector products, wrong output shape, NaN) and recorded in results.json (module, file SHA-256,
    version)."""

    @model_validator(mode="before")
    @classmethod
    def _factory_means_custom(cls, data):
        if isinstance(data, dict) and data.get("factory") is not None and "kind" not in data:
            data = {**data, "kind": "custom"}
        return data

    @model_validator(mode="after")
    def _custom_needs_factory(self):
        from unlearn_audit.plugins import is_plugin_spec

        if self.kind == "custom" and self.factory is None:
            raise ValueError("factory: kind = 'custom' needs factory = 'package.module:function'")
        if self.factory is not None and self.kind != "custom":
            raise ValueError(f"factory: set, but kind = '{self.kind}' (remove kind, or set kind = 'custom')")
        if self.factory is not None and not is_plugin_spec(self.factory):
            raise ValueError(f"factory: expected 'package.module:function', got {self.factory!r}")
        return self


class TrainingConfig(_Section):
    """Mini-batch SGD over a recorded batch schedule; step size η_t = lr·decay^t (t counts steps)."""

    epochs: int = Field(30, gt=0, le=MAX_EPOCHS)
    """Passes over the training records."""
    batch_size: int = Field(32, gt=0, le=10**7)
    """Records per mini-batch |B_t|."""
    lr: float = Field(0.5, gt=0, le=MAX_STEP_SIZE)
    """Initial step size η_0. The default (with lam 0.15, decay 0.995, 30 epochs) is chosen so that the default
    audit's certified release (ε = 1, δ = 1e-5, a-posteriori bound) stays within 2 points of the noiseless test
    accuracy while original and retrained models stay clearly distinguishable (README: "Choosing the training
    settings"); larger steps or a smaller lam make the release noisier or not certifiable."""
    decay: float = Field(0.995, gt=0, le=1)
    """Step-size decay γ per step: η_t = η_0·γ^t."""
    lam: float = Field(0.15, ge=0, le=MAX_STEP_SIZE)
    """L2 regularisation λ of the per-sample loss CE + (λ/2)‖w‖², on all parameters."""
    clip: Literal["none", "per_sample", "batch"] = "none"
    """Gradient clipping: none, per_sample (each record's gradient to norm ≤ clip_norm; bounds the certificate's
    gradient constant G) or batch (the mean batch gradient)."""
    clip_norm: float | None = Field(None, gt=0, le=MAX_NORM)
    """Clipping norm C; required when clip is not none, refused when it is."""
    weight_norm_bound: float | None = Field(None, gt=0, le=MAX_NORM)
    """Project the weights onto ‖w‖ ≤ R after every step (unset = no projection)."""

    @model_validator(mode="after")
    def _clip_needs_norm(self):
        if self.clip != "none" and self.clip_norm is None:
            raise ValueError(f"clip_norm: required when clip = '{self.clip}'")
        if self.clip == "none" and self.clip_norm is not None:
            raise ValueError("clip_norm: set, but clip = 'none' (set clip = 'per_sample' or 'batch', or remove it)")
        return self


BUILTIN_METHODS = ("hfocu", "cns", "ns", "ij", "finetune", "neggrad", "dpsgd", "identity", "retrain")


def _method_name(name: str) -> str:
    from unlearn_audit.plugins import is_plugin_spec

    if name not in BUILTIN_METHODS and not is_plugin_spec(name):
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(BUILTIN_METHODS)}, or name yours as "
                         "'package.module:Class'")
    return name


class UnlearningConfig(_Section):
    """Which records are deleted (the forget set U), and how each method unlearns them."""

    forget_fraction: float = Field(0.02, gt=0, lt=1)
    """Fraction of the training records drawn at random (seeded) as the forget set, when forget_file is unset.
    Default 2% (11 records of the default digits split): the certified release must hide the linearisation error of
    every deletion so far, which grows about quadratically with |U|; at 10% no training setting keeps the release
    at ε = 1 usable (README: "Choosing the training settings")."""
    forget_file: str | None = None
    """Text file of record ids to delete, one per line (overrides forget_fraction); ids must be training records."""
    methods: list[Annotated[str, AfterValidator(_method_name)]] = ["hfocu"]
    """Unlearning methods to run and compare, all on the same model and forget set; the verdict is about hfocu when
    listed, else about the first method listed. Built-in: hfocu (HF-OCU); cns (Zhang et al. 2024's certified Newton
    step, LiSSA, certified); ns (Newton step, Sekhari et al. 2021) and ij (infinitesimal jackknife), both
    uncertified here; finetune and neggrad (uncertified contrast); dpsgd (a model trained with Opacus DP-SGD at
    privacy.epsilon, no deletion step); identity (do nothing) and retrain (exact retraining audited as a method) are
    controls: the first must fail wherever the test has power, the second passes up to α. Options in [baselines].
    Yours: "package.module:Class", a subclass of unlearn_audit.audit.protocol.UnlearningMethod (imported from the
    installed packages or plugin_path; importing RUNS ITS CODE), judged exactly like a built-in method: run on the
    trained model and on each of the audit.pairs paired models."""
    mode: Literal["all", "candidates"] = "all"
    """HF-OCU approximators for every training record (all: any record can be deleted later, in milliseconds), or
    only for the forget set, declared before training (candidates: what the HF-OCU paper does for large models; the
    cost drops from n to |U| vectors: for the paper's MNIST CNN with a 5% forget set, about 2.5 minutes instead of
    an estimated hour on a 2-core CPU; the saved trained run can delete only those records)."""
    normalisation: Literal["sum", "mean"] = "sum"
    """Exact retraining reference: sum divides each replayed batch by its original size (what HF-OCU approximates),
    mean by the number of records left in it."""
    curvature: Literal["exact", "gauss-newton"] = "exact"
    """Curvature in the HF-OCU recursion: the exact Hessian, or the Gauss-Newton approximation (PSD, cheaper;
    named as such in the results)."""
    order: Literal["propagate_first", "inject_first"] = "propagate_first"
    """HF-OCU update order per step: propagate_first (the derivation's) or inject_first (the paper code's, only to
    reproduce its numbers)."""
    layout: Literal["auto", "time_outer", "chunk_outer", "reverse"] = "auto"
    """How the HF-OCU approximators are computed (same results, different cost): time_outer (every vector advances
    at every training step; any model), chunk_outer (softmax regression without clipping: chunks of records through
    every recorded step), reverse (the backward walk over the recorded trajectory with blocks of the d × d
    propagator's rows: d row products per step instead of one HVP per record, linear in n, the fastest when d < n;
    any model), or auto (a cost model picks; the results say which and why)."""
    requests: int = Field(10, gt=0, le=10**7)
    """The forget set is sent as this many deletion requests (split as evenly as possible; at most one per record)."""

    unlearned_weights: str | None = None
    """Weights unlearned OUTSIDE the tool (a .npy file holding the flat float weight vector, as numpy.save writes
    it), produced from the trained run the tool exported (`unlearn-audit precompute --out D`, or an audit's
    trained_run/, for the same config) by deleting the records of forget_file, which is then required. Judged as
    the method "external": distance to retraining, accuracy and the attacks as for any method; but it is ONE model,
    so the per-example test over paired models cannot be run on it: it is ranked against the N retrain-vs-retrain
    null models instead, which can show a trace (fail) but never its absence (the verdict is then inconclusive,
    never pass). Also --unlearned-weights."""
    trained_run: str | None = None
    """The trained run the unlearned_weights were produced from (the --out folder of `unlearn-audit precompute`,
    or an audit run folder): checked to be the very model this config trains (same weights hash, same record ids),
    so that weights unlearned from another model are refused. Only with unlearned_weights. Also --trained-run."""

    @field_validator("methods")
    @classmethod
    def _methods_listed_once(cls, v):
        if not v:
            raise ValueError("list at least one method")
        if len(set(v)) != len(v):
            raise ValueError("a method is listed twice")
        return v

    @model_validator(mode="after")
    def _external_needs_forget_file(self):
        if self.unlearned_weights is not None:
            if self.forget_file is None:
                raise ValueError("unlearned_weights: needs forget_file (the record ids the weights were unlearned "
                                 "for)")
            if not Path(self.unlearned_weights).is_file():
                raise ValueError(f"unlearned_weights: file not found: {self.unlearned_weights}")
        if self.trained_run is not None:
            if self.unlearned_weights is None:
                raise ValueError("trained_run: only with unlearned_weights (the run they were unlearned from)")
            if not Path(self.trained_run).is_dir():
                raise ValueError(f"trained_run: folder not found: {self.trained_run}")
        return self

    @field_validator("forget_file")
    @classmethod
    def _forget_file_exists(cls, v):
        if v is not None and not Path(v).is_file():
            raise ValueError(f"file not found: {v}")
        return v


class PrivacyConfig(_Section):
    """The certificate: releases are (ε, δ)-indistinguishable from a retrained model's release."""

    epsilon: float = Field(1.0, gt=0, le=1000)
    """Certified ε of each release (> 0)."""
    delta: float = Field(1e-5, gt=0, lt=1)
    """Certified δ of each release, in (0, 1); well below 1/(number of training records) is the usual choice."""
    mechanism: Literal["analytic", "classic"] = "analytic"
    """Noise calibration: analytic Gaussian mechanism (Balle & Wang 2018, tight, any ε), or the classic
    Δ·sqrt(2 ln(1.25/δ))/ε (valid only for ε < 1)."""
    max_accuracy_loss: float = Field(0.02, ge=0, lt=1)
    """Utility budget of a certified release: the test accuracy it may lose to the noise (a fraction: 0.02 = 2
    points). The deletion capacity (how many deletions can be served before a release loses more) is measured
    against it, and a trained run keeps the largest σ within it, so that `forget` says when a retrain is due."""
    bound: Literal["a_posteriori", "worst_case"] = "a_posteriori"
    """Sensitivity bound Δ the noise is calibrated to. a_posteriori (DESIGN §2.4b, softmax regression): a rigorous
    bound on the linearisation error itself, replayed for the deleted records along the recorded trajectory (T
    Hessian-vector products per release); data-dependent, tight (typically 1.5–30× the actual distance to retraining);
    a regime where its recursion blows up (large step sizes, small λ, binding per-sample clipping) is reported as not
    certifiable, never given an astronomical σ. worst_case (DESIGN §2.4): the first-order recursion 2·b_T with
    worst-case gradient norms, about 1000× the actual distance. Smooth models without analytic constants (the tanh
    MLP, trained by plain SGD) get the same a-posteriori recursion with measured constants (Lanczos on the retained
    batch's Hessian, finite-difference Hessian-Lipschitz probes along the replay), labelled measured, not rigorous;
    models with kinks (ReLU, max-pool: cnn, lenet5, resnet18), clipping or projection use the worst-case recursion
    with measured constants."""

    @model_validator(mode="after")
    def _classic_range(self):
        if self.mechanism == "classic" and self.epsilon >= 1:
            raise ValueError(f"mechanism: 'classic' is only valid for epsilon < 1 (epsilon = {self.epsilon:g}); "
                             "use 'analytic'")
        return self


class AuditSection(_Section):
    """The statistics of the audit and the privacy-utility sweep."""

    alpha: float = Field(0.05, gt=0, lt=0.5)
    """Significance level: (1 − α) confidence intervals, (1 − 2α) intervals in the equivalence tests."""
    margin: float = Field(0.015, gt=0, lt=0.5)
    """Equivalence margin m: the unlearned model passes when its attack AUC is within ±m of the retrained model's."""
    pairs: int = Field(128, ge=8, le=4096)
    """Models per group of the per-example tests (DESIGN §4b): N pairs (original, each method's unlearned model,
    exact retrain) and N reference retrains, trained at once with independent initialisation and batch schedule;
    the verdict's forgetting test rests on them. Intervals narrow roughly as 1/√N."""
    per_example_margin: float = Field(0.05, gt=0, lt=1)
    """Equivalence margin of the forgetting test, in units of the mean per-record advantage |2·AUC−1| (0 =
    indistinguishable, 1 = separated): the method passes when its advantage over the reference retrains is within
    ±margin of the retrain-vs-retrain null's."""
    bootstrap: int = Field(2000, ge=200, le=100000)
    """Bootstrap replicates (over models) of the forgetting test's interval."""
    attacks: list[Literal["loss", "lira", "mia_u"]] = ["loss", "lira", "mia_u"]
    """Membership-inference attacks run on every model: loss = MIA-L (score = −loss); lira = online LiRA with
    shadow models on random halves of a pool of the forget set, the population and the test split; mia_u = Chen et
    al.'s attack on (original, target) posteriors, trained on shadow models unlearned with HF-OCU (whatever the
    method under audit: Chen et al.'s attacker knows the unlearning algorithm, and HF-OCU is the one audited)."""
    lira_shadows: int = Field(16, ge=4, le=1024)
    """Number of LiRA shadow models (each query record is IN for exactly half of them)."""
    lira_fixed_variance: bool = True
    """LiRA with one global σ_in and σ_out instead of per-record ones (Carlini et al.'s advice below ~64 shadows)."""
    mia_u_shadows: int = Field(8, ge=1, le=1024)
    """Number of MIA-U shadow models (each an original model, unlearned with HF-OCU for forget_fraction of its
    records)."""
    mia_u_classifier: Literal["random_forest", "logistic", "mlp"] = "random_forest"
    """MIA-U attack classifier. Default random forest: with DirectDiff the deletion signal is a drop of the
    posterior on the record's own class, a different column per class, which a linear model on the raw
    difference vector cannot use (logistic + direct_diff stays near AUC 0.5 on digits; logistic needs a
    sorted feature such as sorted_concat)."""
    mia_u_feature: Literal["direct_diff", "sorted_diff", "direct_concat", "sorted_concat", "l2"] = "direct_diff"
    """MIA-U feature of (p_original, p_target): DirectDiff p_o − p_u (default, DESIGN §3), SortedDiff, DirectConcat,
    SortedConcat or L2. With a difference feature the original model as target scores AUC 0.5 by construction."""
    shadow_fit_gap: float = Field(0.1, gt=0, le=1)
    """LiRA and MIA-U refuse to report when the shadows' mean train accuracy is more than this below the target's,
    or their mean test accuracy differs from the target's by more than this."""
    shadow_cache_dir: str | None = None
    """Folder of the shadow-model cache (keyed by everything that shaped the shadows) and of LiRA's keep masks.
    Unset: $UNLEARN_AUDIT_CACHE_DIR/shadows if that variable is set, else the user cache folder
    ($XDG_CACHE_HOME, or ~/.cache)/unlearn-audit/shadows, the same wherever the audit is started; empty string: no
    cache."""
    sweep_sigmas: list[float] = Field(default_factory=lambda: [0.0, 0.01, 0.03, 0.1, 0.3, 1.0], max_length=100)
    """Noise scales σ of the privacy-utility sweep (the certified σ is always added): test accuracy, attack AUC and
    the ε each σ would certify."""

    @field_validator("sweep_sigmas")
    @classmethod
    def _nonneg(cls, v):
        if any(s < 0 for s in v):
            raise ValueError("every sigma must be >= 0")
        if any(s > 1e6 for s in v):
            raise ValueError("every sigma must be <= 1e6")
        return v

    @field_validator("attacks")
    @classmethod
    def _attacks_listed_once(cls, v):
        if not v:
            raise ValueError("list at least one attack")
        if len(set(v)) != len(v):
            raise ValueError("an attack is listed twice")
        return v


class BaselinesConfig(_Section):
    """Options of the baseline unlearning methods (unlearning.methods other than hfocu)."""

    solver: Literal["auto", "cholesky", "cg"] = "auto"
    """ns and ij: exact Cholesky of the float64 Hessian, conjugate gradients with Hessian-vector products, or auto
    (Cholesky when the model has at most exact_max_dim parameters)."""
    exact_max_dim: int = Field(5000, gt=0, le=20000)
    """Largest parameter count for which solver = auto builds and factors the dense Hessian."""
    hvp_precision: Literal["auto", "float64", "float32"] = "auto"
    """ns, ij (conjugate gradients) and cns: arithmetic of the Hessian-vector products of models other than softmax
    regression (which always uses its float64 closed form). float32 is about 5× faster for convolutional nets on a
    CPU, with a relative HVP error near 1e-6; auto = float64 up to exact_max_dim parameters, float32 above. Solvers,
    gradients and the returned weights stay float64."""
    cg_tol: float = Field(1e-10, gt=0, lt=1)
    """Relative residual at which conjugate gradients stop."""
    cg_maxiter: int | None = Field(None, gt=0, le=10**7)
    """Most conjugate-gradient iterations per solve (unset = 10·d); a solve that stops early says so."""
    cns_damping: float = Field(0.01, ge=0, le=MAX_NORM)
    """cns: λ of the local convex approximation (H + λI); raised, and said so, when H + λI is not positive
    definite."""
    cns_chains: int = Field(10, gt=0, le=10**4)
    """cns: LiSSA chains averaged."""
    cns_depth: int = Field(1000, gt=0, le=10**7)
    """cns: LiSSA recursion depth per chain."""
    cns_hessian_batch: int = Field(10, gt=0, le=10**7)
    """cns: records per Hessian mini-batch in LiSSA."""
    cns_scale: float | None = Field(None, gt=0, le=1e12)
    """cns: LiSSA scale (unset = 1.25 × the largest measured Hessian eigenvalue magnitude; must exceed it)."""
    finetune_epochs: int = Field(2, gt=0, le=MAX_EPOCHS)
    """finetune: epochs of SGD on the retained records, starting from the trained model."""
    finetune_lr: float | None = Field(None, gt=0, le=MAX_STEP_SIZE)
    """finetune: constant step size (unset = the training schedule's last step size)."""
    neggrad_steps: int = Field(5, gt=0, le=10**6)
    """neggrad: full-batch gradient-ascent steps on the forget set's cross-entropy."""
    neggrad_lr: float | None = Field(None, gt=0, le=MAX_STEP_SIZE)
    """neggrad: ascent step size (unset = the training schedule's last step size)."""
    dpsgd_clip_norm: float = Field(1.0, gt=0, le=MAX_NORM)
    """dpsgd: per-sample clipping norm C (training.clip_norm is used instead when training.clip = per_sample)."""
    dpsgd_accountant: Literal["rdp", "prv"] = "rdp"
    """dpsgd: Opacus accountant that picks the noise multiplier and reports ε."""


class AuditConfig(_Section):
    """The whole audit. ``seed`` drives splits, initialisation, schedule, forget set and noise."""

    seed: int = Field(0, ge=0, le=MAX_SEED)
    """Master seed: splits, initialisation, batch schedule, forget set and release noise all derive from it."""
    plugin_path: list[str] = Field(default_factory=list, max_length=64)
    """Folders searched first for the user code that model.factory and unlearning.methods name (beside the
    installed packages); --plugin-path adds more. Each must exist. Nothing is imported from them unless a key names
    it; importing runs the module's code."""
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    unlearning: UnlearningConfig = UnlearningConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    audit: AuditSection = AuditSection()
    baselines: BaselinesConfig = BaselinesConfig()

    @field_validator("plugin_path")
    @classmethod
    def _plugin_folders_exist(cls, v):
        for p in v:
            if not Path(p).is_dir():
                raise ValueError(f"folder not found: {p}")
        return v

    @model_validator(mode="after")
    def _bound_needs_derivation_order(self):
        if self.privacy.bound == "a_posteriori" and self.unlearning.order == "inject_first" \
                and self.model.kind == "softmax":
            raise ValueError("privacy.bound: 'a_posteriori' certifies the derivation's order (propagate, then "
                             "inject); with unlearning.order = 'inject_first' set privacy.bound = 'worst_case'")
        return self

    def digest(self) -> str:
        return json_digest(self.model_dump(mode="json"))

    def with_command_line(self, *, plugin_path: tuple[str, ...] | list[str] = (),
                          unlearned_weights: str | None = None, trained_run: str | None = None) -> "AuditConfig":
        """The config with the command line's --plugin-path folders appended and --unlearned-weights /
        --trained-run set, validated again (ConfigError naming the key)."""
        data = self.model_dump(mode="json")
        data["plugin_path"] = [*data["plugin_path"], *[str(p) for p in plugin_path]]
        if unlearned_weights is not None:
            data["unlearning"]["unlearned_weights"] = str(unlearned_weights)
        if trained_run is not None:
            data["unlearning"]["trained_run"] = str(trained_run)
        return config_from_dict(data)

    def to_toml(self) -> str:
        return dump_toml(self.model_dump(mode="json"))


def _section_class(loc: tuple) -> type[BaseModel] | None:
    """The config section a location points at (None if it points at a value)."""
    cls: type[BaseModel] = AuditConfig
    for part in loc:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        ann = field.annotation if field is not None else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        cls = ann
    return cls


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = tuple(first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "model_type" and loc:
        msg = "must be a table ([section]), not a value"
    elif first["type"].endswith("_type") or first["type"] in ("literal_error", "finite_number", "greater_than",
                                                                 "greater_than_equal", "less_than", "less_than_equal"):
        got = first.get("input")
        if isinstance(got, (str, int, float, bool)) and len(repr(got)) <= 40:
            msg += f" (got {got!r})"
    # A section-level check names the offending key as "key: message": move the key into the path.
    section = _section_class(loc)
    head, sep, rest = msg.partition(": ")
    if section is not None and sep and head in section.model_fields:
        loc, msg = loc + (head,), rest
    path = ".".join(str(p) for p in loc) or "(top level)"
    msg = " ".join(msg.split())                 # one line, whatever the underlying message
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
    except RecursionError:
        raise ConfigError(f"{p}: TOML nested too deeply (an audit config nests two levels)") from None
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


# ---------------------------------------------------------------------------------------------------------------------
# The key reference (docs/config.md) is generated from the models above, so it cannot drift from the code:
#     python -m unlearn_audit.config --write-docs docs/config.md        (tests/test_config_docs.py checks it)

def _type_name(ann) -> str:
    import types
    import typing

    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        name = " or ".join(_type_name(a) for a in inner)
        return f"{name} (optional)" if len(inner) < len(args) else name
    if origin is list:
        return f"list of {_type_name(args[0])}" if args else "list"
    names = {str: "string", int: "integer", float: "number", bool: "boolean"}
    return names.get(ann, getattr(ann, "__name__", str(ann)))


def _constraints(field) -> str:
    import annotated_types as at

    words = {at.Gt: ("gt", ">"), at.Ge: ("ge", "≥"), at.Lt: ("lt", "<"), at.Le: ("le", "≤")}
    out = []
    for m in field.metadata:
        for kind, (attr, sign) in words.items():
            if isinstance(m, kind):
                out.append(f"{sign} {getattr(m, attr)}")
    return ", ".join(out)


def _default_text(field) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    return f"`{_toml_value(value)}`"


def config_reference_markdown() -> str:
    """Markdown reference of every config key: type, constraint, default and meaning (the text of docs/config.md)."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from unlearn_audit/config.py by `python -m unlearn_audit.config --write-docs docs/config.md`;",
        "     do not edit by hand (tests/test_config_docs.py fails when this file is out of date). -->",
        "",
        "`unlearn-audit audit --config FILE.toml` reads a TOML file. Every key is optional (its default is used);",
        "an unknown key, a value of the wrong TOML type (`\"30\"` for an integer, `\"yes\"` for a boolean),",
        "`inf`/`nan`, or a value outside its range is an error: the command prints one line naming the key path, e.g.",
        "`error: training.batch_size: Input should be greater than 0 (got 0)`, exits with code 2 and writes nothing.",
        "Relative file paths are read relative to the current folder. Examples: [`examples/`](../examples/).",
        "",
    ]
    top = [(k, f) for k, f in AuditConfig.model_fields.items()
           if not (isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel))]
    sections = [(k, f.annotation) for k, f in AuditConfig.model_fields.items()
                if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)]

    def table(prefix: str, fields) -> list[str]:
        rows = ["| key | type | allowed | default | meaning |", "|---|---|---|---|---|"]
        for name, f in fields:
            desc = " ".join((f.description or "").split()).replace("|", "\\|")
            rows.append(f"| `{prefix}{name}` | {_type_name(f.annotation)} | {_constraints(f) or '—'} | "
                        f"{_default_text(f)} | {desc} |")
        return rows

    lines += ["## Top level", "", *table("", top), ""]
    for name, cls in sections:
        doc = " ".join((cls.__doc__ or "").split())
        lines += [f"## `[{name}]`", "", doc, "", *table(f"{name}.", cls.model_fields.items()), ""]
    lines += ["## Cross-key rules", "",
              "- `data.train_fraction + data.test_fraction + data.population_fraction` ≤ 1.",
              "- `data.path` is required for `npz`, `csv` and `parquet` and refused otherwise; `data.data_dir` is "
              "required for `mnist_idx`, `cifar10_local` and `image_folder`, optional for `fashion_mnist`, refused "
              "otherwise; `data.label_column` and `data.id_column` are for `csv` and `parquet` only. Named files and "
              "folders must exist.",
              "- `training.clip_norm` is required when `training.clip` is not `\"none\"`, and refused when it is.",
              "- `privacy.mechanism = \"classic\"` needs `privacy.epsilon` < 1.",
              "- `unlearning.methods` and `audit.attacks` list each name at most once, and at least one; a method is "
              "a built-in name or `\"package.module:Class\"`.",
              "- `model.factory` sets `model.kind = \"custom\"` (another kind with a factory is an error).",
              "- `unlearning.unlearned_weights` needs `unlearning.forget_file`; `unlearning.trained_run` needs "
              "`unlearning.unlearned_weights`.",
              "- `unlearning.forget_file`, when set, must exist; its ids must be training records (checked when the "
              "audit runs).", "",
              "## The defaults as a file", "",
              "This is the default audit (`unlearn-audit audit` with no `--config`), as the resolved `config.toml` "
              "every run writes:", "", "```toml", AuditConfig().to_toml().rstrip(), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Print or write the configuration reference (docs/config.md).")
    ap.add_argument("--write-docs", metavar="PATH", help="write the reference to PATH instead of printing it")
    ns = ap.parse_args()
    if ns.write_docs:
        Path(ns.write_docs).write_text(config_reference_markdown(), encoding="utf-8")
    else:
        print(config_reference_markdown(), end="")
