"""Shadow / reference models: many small models trained at once, cached on disk, checked for fit.

Label convention of the package: 1 = member, 0 = non-member; higher score = more likely member.
Here a keep mask ``masks[i, j] = True`` means model ``i`` trains on record ``j`` (record ``j`` is a
*member* of model ``i``).

Two model kinds: ``"softmax"`` (multinomial logistic regression, z = xW + b) and ``"mlp"`` (one hidden
ReLU layer, z = relu(xW1 + b1)W2 + b2). :func:`train_ensemble` trains k models in one pass: their
parameters are stacked along a leading axis and every SGD step is a batched matmul (``torch.bmm``) over
all k models. Each model runs plain mini-batch SGD over **its own** records: per epoch it draws its own
permutation of its records and cuts it into batches; models with fewer records have fewer batches, and
their padded steps are inactive (no update at all, not even weight decay). :func:`train_sequential`
trains the same models one after the other with ``torch.nn`` + ``torch.optim.SGD``, with the same
initialisation and the same batches, so the two agree to float round-off (tested to 1e-5).

Any other architecture (a CNN, a tanh MLP, ...): :func:`train_functional_ensemble` takes the model as a function
``forward(w, x) -> logits`` of a flat parameter vector and trains k of them at once with ``torch.func.vmap`` over
the stacked vectors, on the same batch schedule and update rule (kind ``"functional"``; the caller supplies the k
initial vectors, and ``forward`` again when loading one from the cache).

Update rule (all trainers): w <- w - lr * (mean-batch-gradient of the cross-entropy + weight_decay * w).
Randomness: model i's initialisation and batch order come from ``numpy.random.default_rng([seed, i, ...])``,
so model i is the same whatever k is.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ._validation import float_array, label_array, to_numpy
from .errors import InvalidInputError, ShadowFitError

__all__ = [
    "CODE_VERSION",
    "MODEL_KINDS",
    "Ensemble",
    "train_ensemble",
    "train_functional_ensemble",
    "train_sequential",
    "predict_logits",
    "init_params",
    "batch_schedule",
    "ShadowCache",
    "cache_key",
    "FitCheck",
    "check_fit",
]

#: Part of every cache key: bump when anything in this module changes the trained models.
CODE_VERSION = "attacks.shadows/1"
MODEL_KINDS = ("softmax", "mlp")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


# --------------------------------------------------------------------------------------------- models
def _param_shapes(model_kind: str, d: int, n_classes: int, hidden: int) -> dict[str, tuple[int, ...]]:
    if model_kind == "softmax":
        return {"W": (d, n_classes), "b": (n_classes,)}
    if model_kind == "mlp":
        return {"W1": (d, hidden), "b1": (hidden,), "W2": (hidden, n_classes), "b2": (n_classes,)}
    raise InvalidInputError(f"model_kind: expected one of {MODEL_KINDS}, got {model_kind!r}")


def init_params(model_kind: str, k: int, d: int, n_classes: int, hidden: int = 64, seed: int = 0,
                dtype: str = "float32") -> dict[str, torch.Tensor]:
    """Stacked initial parameters (leading axis k), like ``torch.nn.Linear``'s default U(-1/sqrt(fan_in), ...).

    Model i draws from ``default_rng([seed, i, 0])``: independent of k.
    """
    shapes = _param_shapes(model_kind, d, n_classes, hidden)
    fan_in = {"W": d, "b": d, "W1": d, "b1": d, "W2": hidden, "b2": hidden}
    out = {name: np.empty((k,) + shape) for name, shape in shapes.items()}
    for i in range(k):
        rng = np.random.default_rng([seed, i, 0])
        for name, shape in shapes.items():
            bound = 1.0 / math.sqrt(fan_in[name])
            out[name][i] = rng.uniform(-bound, bound, size=shape)
    return {name: torch.tensor(a, dtype=_DTYPES[dtype]) for name, a in out.items()}


def _kind_of(params: dict[str, Any]) -> str:
    if set(params) == {"W", "b"}:
        return "softmax"
    if set(params) == {"W1", "b1", "W2", "b2"}:
        return "mlp"
    if set(params) == {"w"}:
        return "functional"
    raise InvalidInputError(f"params: unrecognised parameter names {sorted(params)}")


def _forward_batched(params: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
    """xb: (k, B, d) -> logits (k, B, C): model i sees xb[i]."""
    if "W" in params:
        return torch.baddbmm(params["b"][:, None, :], xb, params["W"])
    h = torch.relu(torch.baddbmm(params["b1"][:, None, :], xb, params["W1"]))
    return torch.baddbmm(params["b2"][:, None, :], h, params["W2"])


def predict_logits(params: dict[str, Any], x: Any, chunk: int = 4096) -> torch.Tensor:
    """Logits of all k stacked models on the same records: x (m, d) -> (k, m, C), in the params' dtype."""
    ps = {n: torch.as_tensor(to_numpy(p)) if not isinstance(p, torch.Tensor) else p for n, p in params.items()}
    _kind_of(ps)
    ref = next(iter(ps.values()))
    xt = torch.as_tensor(to_numpy(x)).to(ref.dtype)
    if xt.ndim != 2:
        raise InvalidInputError(f"x: expected shape (m, d), got {tuple(xt.shape)}")
    outs = []
    with torch.no_grad():
        for s in range(0, xt.shape[0], chunk):
            xc = xt[s:s + chunk]
            if "W" in ps:
                outs.append(torch.matmul(xc, ps["W"]) + ps["b"][:, None, :])
            else:
                h = torch.relu(torch.matmul(xc, ps["W1"]) + ps["b1"][:, None, :])
                outs.append(torch.matmul(h, ps["W2"]) + ps["b2"][:, None, :])
    return torch.cat(outs, dim=1)


# ------------------------------------------------------------------------------------------- schedule
def batch_schedule(masks: np.ndarray, epochs: int, batch_size: int, seed: int
                   ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield per-step padded batches for all k models, epoch by epoch.

    Each yielded item is ``(idx, valid, count)``: ``idx`` (k, B) record indices (padding = 0),
    ``valid`` (k, B) bool, ``count`` (k,) batch sizes (0 = this model does not update at this step).
    Model i permutes its own records with ``default_rng([seed, i, 1])`` every epoch.
    """
    k = masks.shape[0]
    own = [np.flatnonzero(masks[i]) for i in range(k)]
    rngs = [np.random.default_rng([seed, i, 1]) for i in range(k)]
    steps = max(math.ceil(len(o) / batch_size) for o in own)
    for _ in range(epochs):
        idx = np.zeros((steps, k, batch_size), dtype=np.int64)
        valid = np.zeros((steps, k, batch_size), dtype=bool)
        for i in range(k):
            perm = rngs[i].permutation(own[i])
            flat_idx = idx[:, i, :].reshape(-1)
            flat_idx[: perm.size] = perm
            idx[:, i, :] = flat_idx.reshape(steps, batch_size)
            flat_valid = np.zeros(steps * batch_size, dtype=bool)
            flat_valid[: perm.size] = True
            valid[:, i, :] = flat_valid.reshape(steps, batch_size)
        count = valid.sum(axis=2)
        for t in range(steps):
            yield idx[t], valid[t], count[t]


# ------------------------------------------------------------------------------------------- training
@dataclass(eq=False)
class Ensemble:
    """k trained models of one kind, parameters stacked along axis 0, with their fit statistics.

    ``train_acc[i]`` is model i's accuracy on its own (kept) records; ``test_acc[i]`` its accuracy on
    ``x_test`` when given, else on the records it did not keep (NaN if it kept every record).
    """

    model_kind: str
    params: dict[str, torch.Tensor]
    n_classes: int
    train_acc: np.ndarray
    test_acc: np.ndarray
    key: str | None = None
    from_cache: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    """``forward(w, x) -> logits`` of one model, for ``model_kind == "functional"`` (``params = {"w": (k, d)}``)."""

    @property
    def k(self) -> int:
        return int(next(iter(self.params.values())).shape[0])

    def predict_logits(self, x: Any) -> torch.Tensor:
        """(m, ...) -> (k, m, C) logits of every model."""
        if self.model_kind == "functional":
            if self.forward is None:
                raise InvalidInputError("a functional ensemble needs its forward(w, x) to predict")
            return _functional_logits(self.forward, self.params["w"], x)
        return predict_logits(self.params, x)

    def model_params(self, i: int) -> dict[str, torch.Tensor]:
        """Parameters of model i alone (views)."""
        return {n: p[i] for n, p in self.params.items()}

    def select(self, which: Any) -> "Ensemble":
        """The sub-ensemble of the models ``which`` (an index array, slice or bool mask), e.g. the shadows
        without the model that plays the target."""
        idx = np.arange(self.k)[which]
        t = torch.as_tensor(idx)
        return Ensemble(self.model_kind, {n: p[t] for n, p in self.params.items()}, self.n_classes,
                        self.train_acc[idx], self.test_acc[idx], key=None, from_cache=self.from_cache,
                        info=dict(self.info), forward=self.forward)

    def to_module(self, i: int) -> torch.nn.Module:
        """Model i as a ``torch.nn.Sequential`` of ``nn.Linear`` (+ ``nn.ReLU``) layers (a copy)."""
        if self.model_kind == "functional":
            raise InvalidInputError("a functional ensemble has no torch.nn form here: use forward(w, x)")
        return _to_module(self.model_kind, self.model_params(i))


def _validate(model_kind: str, x: Any, y: Any, masks: Any, n_classes: int, epochs: int, batch_size: int,
              lr: float, weight_decay: float, hidden: int, dtype: str):
    _param_shapes(model_kind, 1, 2, 1)
    xa = float_array("x", x, ndim=2)
    if n_classes < 2:
        raise InvalidInputError(f"n_classes: need at least 2, got {n_classes}")
    ya = label_array("y", y, n_classes=n_classes, shape=(xa.shape[0],))
    ma = to_numpy(masks)
    if ma.dtype != bool:
        raise InvalidInputError(f"masks: expected a bool keep-mask array, got dtype {ma.dtype}")
    if ma.ndim != 2 or ma.shape[1] != xa.shape[0]:
        raise InvalidInputError(f"masks: expected shape (k, {xa.shape[0]}), got {ma.shape}")
    empty = np.flatnonzero(ma.sum(axis=1) == 0)
    if empty.size:
        raise InvalidInputError(f"masks: model(s) {empty[:5].tolist()} keep no record")
    for name, val in (("epochs", epochs), ("batch_size", batch_size), ("hidden", hidden)):
        if int(val) != val or val < 1:
            raise InvalidInputError(f"{name}: expected a positive integer, got {val!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise InvalidInputError(f"lr: expected a positive finite number, got {lr!r}")
    if not (weight_decay >= 0 and math.isfinite(weight_decay)):
        raise InvalidInputError(f"weight_decay: expected a finite number >= 0, got {weight_decay!r}")
    if dtype not in _DTYPES:
        raise InvalidInputError(f"dtype: expected one of {list(_DTYPES)}, got {dtype!r}")
    return xa, ya, ma.copy()


def _accuracies(params, xa, ya, masks, x_test, y_test, n_classes):
    pred = predict_logits(params, xa).argmax(dim=2).numpy()  # (k, n)
    correct = pred == ya[None, :]
    train_acc = (correct & masks).sum(1) / masks.sum(1)
    if x_test is not None:
        xt = float_array("x_test", x_test, ndim=2)
        yt = label_array("y_test", y_test, n_classes=n_classes, shape=(xt.shape[0],))
        test_acc = (predict_logits(params, xt).argmax(dim=2).numpy() == yt[None, :]).mean(1)
    else:
        out = ~masks
        with np.errstate(invalid="ignore", divide="ignore"):
            test_acc = np.where(out.sum(1) > 0, (correct & out).sum(1) / np.maximum(out.sum(1), 1), np.nan)
    return train_acc.astype(np.float64), np.asarray(test_acc, dtype=np.float64)


def train_ensemble(model_kind: str, x: Any, y: Any, masks: Any, n_classes: int, epochs: int = 50,
                   batch_size: int = 32, lr: float = 0.1, weight_decay: float = 0.0, seed: int = 0,
                   hidden: int = 64, dtype: str = "float32", x_test: Any = None, y_test: Any = None) -> Ensemble:
    """Train k models at once, model i on the records with ``masks[i]`` True (1 = member of model i).

    Args:
        model_kind: ``"softmax"`` or ``"mlp"``.
        x, y: the pool, (n, d) features and (n,) integer labels.
        masks: (k, n) bool keep masks.
        n_classes, epochs, batch_size, lr, weight_decay, seed, hidden, dtype: training hyperparameters
            (``hidden`` is ignored for softmax but still part of cache keys).
        x_test, y_test: optional common test set for ``test_acc`` (default: each model's left-out records).

    Returns:
        :class:`Ensemble` with stacked parameters, train and test accuracies.
    """
    xa, ya, ma = _validate(model_kind, x, y, masks, n_classes, epochs, batch_size, lr, weight_decay, hidden, dtype)
    k, d = ma.shape[0], xa.shape[1]
    tdtype = _DTYPES[dtype]
    params = init_params(model_kind, k, d, n_classes, hidden, seed, dtype)
    for p in params.values():
        p.requires_grad_(True)
    X = torch.tensor(xa, dtype=tdtype)
    Y = torch.tensor(ya)
    names = list(params)
    plist = [params[n] for n in names]
    for idx, valid, count in batch_schedule(ma, epochs, batch_size, seed):
        idx_t = torch.from_numpy(idx)
        xb, yb = X[idx_t], Y[idx_t]                                    # (k, B, d), (k, B)
        weights = torch.from_numpy(valid / np.maximum(count, 1)[:, None]).to(tdtype)   # 1/|B_i| or 0
        active = torch.from_numpy(count > 0).to(tdtype)
        logits = _forward_batched(params, xb)
        losses = F.cross_entropy(logits.reshape(-1, n_classes), yb.reshape(-1), reduction="none")
        loss = (losses.reshape(k, -1) * weights).sum()     # sum over models of each model's batch mean
        grads = torch.autograd.grad(loss, plist)
        with torch.no_grad():
            for p, g in zip(plist, grads):
                step = g + weight_decay * p if weight_decay else g
                a = active.reshape((k,) + (1,) * (p.ndim - 1))
                p.sub_(lr * a * step)
    params = {n: p.detach() for n, p in params.items()}
    train_acc, test_acc = _accuracies(params, xa, ya, ma, x_test, y_test, n_classes)
    return Ensemble(model_kind, params, n_classes, train_acc, test_acc, info={"trainer": "ensemble"})


def _functional_logits(forward, W: torch.Tensor, x: Any, chunk: int = 512) -> torch.Tensor:
    """Logits of k functional models on the same records: x (m, ...) -> (k, m, C)."""
    xt = torch.as_tensor(to_numpy(x)).to(W.dtype)
    batched = torch.func.vmap(forward, in_dims=(0, None))
    with torch.no_grad():
        return torch.cat([batched(W, xt[s:s + chunk]) for s in range(0, xt.shape[0], chunk)], dim=1)


def train_functional_ensemble(forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], init_weights: Any,
                              x: Any, y: Any, masks: Any, n_classes: int, epochs: int = 50, batch_size: int = 32,
                              lr: float = 0.1, weight_decay: float = 0.0, seed: int = 0, x_test: Any = None,
                              y_test: Any = None) -> Ensemble:
    """Train k models of any architecture at once, model i on the records with ``masks[i]`` True.

    Args:
        forward: ``forward(w, xb) -> logits (B, C)`` of one model with flat parameters ``w`` (d,); it must treat
            records independently (no batch statistics), as ``torch.func.vmap`` runs it per model.
        init_weights: (k, d) initial parameter vectors, one per model (their dtype is the training dtype).
        x, y: the pool, (n, ...) inputs in the shape ``forward`` takes and (n,) integer labels.
        masks: (k, n) bool keep masks (1 = member of model i).
        n_classes, epochs, batch_size, lr, weight_decay, seed: as in :func:`train_ensemble` (same batch schedule,
            same update rule, padded steps inactive).
        x_test, y_test: optional common test set for ``test_acc`` (default: each model's left-out records).

    Returns:
        :class:`Ensemble` of kind ``"functional"`` with ``params = {"w": (k, d)}`` and ``forward`` attached.
    """
    W = torch.as_tensor(to_numpy(init_weights)).clone()
    if W.ndim != 2 or not W.dtype.is_floating_point:
        raise InvalidInputError(f"init_weights: expected a (k, d) float array, got shape {tuple(W.shape)}")
    xa = np.asarray(to_numpy(x))
    if xa.ndim < 2 or not np.isfinite(xa).all():
        raise InvalidInputError(f"x: expected finite records of shape (n, ...), got shape {xa.shape}")
    # the built-in checks of labels, masks and hyper-parameters ("softmax" only stands in for a valid kind)
    _validate("softmax", xa.reshape(len(xa), -1), y, masks, n_classes, epochs, batch_size, lr, weight_decay, 1,
              "float32")
    ya = label_array("y", y, n_classes=n_classes, shape=(xa.shape[0],))
    ma = to_numpy(masks).copy()
    k = ma.shape[0]
    if W.shape[0] != k:
        raise InvalidInputError(f"init_weights: {W.shape[0]} vectors for {k} keep masks")
    X, Y = torch.as_tensor(xa).to(W.dtype), torch.as_tensor(ya)

    def batch_loss(w, xb, yb, wb):
        return (F.cross_entropy(forward(w, xb), yb, reduction="none") * wb).sum()

    step_grad = torch.func.vmap(torch.func.grad(batch_loss))
    for idx, valid, count in batch_schedule(ma, epochs, batch_size, seed):
        idx_t = torch.from_numpy(idx)
        wts = torch.from_numpy(valid / np.maximum(count, 1)[:, None]).to(W.dtype)      # 1/|B_i| or 0
        g = step_grad(W, X[idx_t], Y[idx_t], wts)
        if weight_decay:
            g = g + weight_decay * W
        W = W - lr * torch.from_numpy(count > 0).to(W.dtype)[:, None] * g
    pred = _functional_logits(forward, W, X).argmax(dim=2).numpy()
    correct = pred == ya[None, :]
    train_acc = (correct & ma).sum(1) / ma.sum(1)
    if x_test is not None:
        yt = label_array("y_test", y_test, n_classes=n_classes, shape=(len(to_numpy(x_test)),))
        test_acc = (_functional_logits(forward, W, x_test).argmax(dim=2).numpy() == yt[None, :]).mean(1)
    else:
        out = ~ma
        with np.errstate(invalid="ignore", divide="ignore"):
            test_acc = np.where(out.sum(1) > 0, (correct & out).sum(1) / np.maximum(out.sum(1), 1), np.nan)
    return Ensemble("functional", {"w": W.detach()}, n_classes, train_acc.astype(np.float64),
                    np.asarray(test_acc, dtype=np.float64), info={"trainer": "functional ensemble (torch.func.vmap)"},
                    forward=forward)


def _to_module(model_kind: str, p: dict[str, torch.Tensor]) -> torch.nn.Sequential:
    """A ``torch.nn.Sequential`` holding one model's parameters (nn.Linear stores W transposed)."""
    def linear(W, b):
        layer = torch.nn.Linear(W.shape[0], W.shape[1], dtype=W.dtype)
        with torch.no_grad():
            layer.weight.copy_(W.T)
            layer.bias.copy_(b)
        return layer
    if model_kind == "softmax":
        return torch.nn.Sequential(linear(p["W"], p["b"]))
    return torch.nn.Sequential(linear(p["W1"], p["b1"]), torch.nn.ReLU(), linear(p["W2"], p["b2"]))


def _from_module(model_kind: str, module: torch.nn.Sequential) -> dict[str, torch.Tensor]:
    lin = [m for m in module if isinstance(m, torch.nn.Linear)]
    if model_kind == "softmax":
        return {"W": lin[0].weight.detach().T.clone(), "b": lin[0].bias.detach().clone()}
    return {"W1": lin[0].weight.detach().T.clone(), "b1": lin[0].bias.detach().clone(),
            "W2": lin[1].weight.detach().T.clone(), "b2": lin[1].bias.detach().clone()}


def train_sequential(model_kind: str, x: Any, y: Any, masks: Any, n_classes: int, epochs: int = 50,
                     batch_size: int = 32, lr: float = 0.1, weight_decay: float = 0.0, seed: int = 0,
                     hidden: int = 64, dtype: str = "float32", x_test: Any = None, y_test: Any = None) -> Ensemble:
    """The same k models as :func:`train_ensemble`, trained one after another with ``torch.nn`` and
    ``torch.optim.SGD`` (same initialisation, same batches): the reference for tests and benchmarks."""
    xa, ya, ma = _validate(model_kind, x, y, masks, n_classes, epochs, batch_size, lr, weight_decay, hidden, dtype)
    k, d = ma.shape[0], xa.shape[1]
    tdtype = _DTYPES[dtype]
    init = init_params(model_kind, k, d, n_classes, hidden, seed, dtype)
    X = torch.tensor(xa, dtype=tdtype)
    Y = torch.tensor(ya)
    schedule = list(batch_schedule(ma, epochs, batch_size, seed))   # same batches as the ensemble
    trained = []
    for i in range(k):
        module = _to_module(model_kind, {n: p[i] for n, p in init.items()})
        opt = torch.optim.SGD(module.parameters(), lr=lr, weight_decay=weight_decay)
        for idx, valid, count in schedule:
            if count[i] == 0:
                continue
            b = torch.from_numpy(idx[i, : count[i]])
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(module(X[b]), Y[b]).backward()
            opt.step()
        trained.append(_from_module(model_kind, module))
    params = {n: torch.stack([t[n] for t in trained]) for n in init}
    train_acc, test_acc = _accuracies(params, xa, ya, ma, x_test, y_test, n_classes)
    return Ensemble(model_kind, params, n_classes, train_acc, test_acc, info={"trainer": "sequential"})


# ---------------------------------------------------------------------------------------------- cache
_TRAIN_SIGNATURE = inspect.signature(train_ensemble)  # captured once: keys never depend on wrappers


def _digest_array(a: Any) -> str:
    arr = np.ascontiguousarray(to_numpy(a))
    h = hashlib.sha256()
    h.update(f"{arr.dtype.str}|{arr.shape}|".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def cache_key(model_kind: str, x: Any, y: Any, masks: Any, n_classes: int, **kwargs: Any) -> str:
    """sha256 of everything that shapes the models :func:`train_ensemble` would return for these arguments.

    Every parameter of :func:`train_ensemble` is included (defaults filled in, so a change of default is
    a change of key), arrays by content digest (dtype, shape and bytes), plus :data:`CODE_VERSION`, the
    torch major.minor version and the trainer name (``kwargs["trainer"]``, default "ensemble").
    """
    trainer = kwargs.pop("trainer", "ensemble")
    bound = _TRAIN_SIGNATURE.bind(model_kind, x, y, masks, n_classes, **kwargs)
    bound.apply_defaults()
    desc: dict[str, Any] = {"code_version": CODE_VERSION, "trainer": trainer,
                            "torch": ".".join(torch.__version__.split(".")[:2])}
    for name, value in bound.arguments.items():
        if value is None or isinstance(value, (str, bool, int, float)):
            desc[name] = value
        else:
            desc[name] = {"sha256": _digest_array(value)}
    blob = json.dumps(desc, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class ShadowCache:
    """On-disk cache of trained ensembles, one ``<key>.npz`` per ensemble (no pickle anywhere).

    The key (:func:`cache_key`) covers the data, masks, model kind, every hyperparameter, the seed and
    the code version, so a change of any of them trains anew. Files are written atomically and read
    with ``np.load(allow_pickle=False)``. ``hits``/``misses`` count loads and trainings.
    """

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.npz"

    def load(self, key: str, forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
             ) -> Ensemble | None:
        """The cached ensemble for ``key``, or None if absent. A functional ensemble gets ``forward`` attached
        (the cache holds numbers only, never code)."""
        path = self.path(key)
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta_json"]).decode())
            if meta.get("key") != key:
                raise InvalidInputError(f"cache file {path} holds key {meta.get('key')!r}, expected {key!r}")
            params = {n[len("param_"):]: torch.from_numpy(z[n].copy()) for n in z.files if n.startswith("param_")}
            ens = Ensemble(meta["model_kind"], params, int(meta["n_classes"]), z["train_acc"].copy(),
                           z["test_acc"].copy(), key=key, from_cache=True, info=meta.get("info", {}),
                           forward=forward)
        _kind_of(ens.params)
        return ens

    def save(self, key: str, ens: Ensemble) -> Path:
        """Write ``ens`` under ``key`` atomically (temp file + rename)."""
        meta = {"key": key, "model_kind": ens.model_kind, "n_classes": ens.n_classes,
                "code_version": CODE_VERSION, "info": ens.info}
        arrays = {f"param_{n}": p.detach().cpu().numpy() for n, p in ens.params.items()}
        arrays["train_acc"] = np.asarray(ens.train_acc, np.float64)
        arrays["test_acc"] = np.asarray(ens.test_acc, np.float64)
        arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, allow_pickle=False, **arrays)   # numeric arrays only (np.load refuses pickles)
            os.replace(tmp, self.path(key))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return self.path(key)

    def train_ensemble(self, model_kind: str, x: Any, y: Any, masks: Any, n_classes: int,
                       **kwargs: Any) -> Ensemble:
        """Load the ensemble for these exact arguments, or train it with :func:`train_ensemble` and store it."""
        key = cache_key(model_kind, x, y, masks, n_classes, **kwargs)
        ens = self.load(key)
        if ens is not None:
            self.hits += 1
            return ens
        self.misses += 1
        ens = train_ensemble(model_kind, x, y, masks, n_classes, **kwargs)
        ens.key = key
        self.save(key, ens)
        return ens


# ------------------------------------------------------------------------------------------ fit check
def check_fit(shadow_train_acc: Any, shadow_test_acc: Any, target_train_acc: float, target_test_acc: float,
              max_gap: float = 0.1, max_test_gap: float | None = None) -> dict[str, Any]:
    """Refuse shadows that did not fit: raise :class:`ShadowFitError` saying why, else return a summary.

    Shadows underfit when their mean train accuracy is more than ``max_gap`` below the target's train
    accuracy (they did not memorise their training data the way the target did, so an attack calibrated
    on them under-reports the risk). With ``max_test_gap`` set, the mean shadow test accuracy must also be
    within that distance of the target's test accuracy.
    """
    tr = float_array("shadow_train_acc", shadow_train_acc, ndim=1)
    te_raw = to_numpy(shadow_test_acc).astype(np.float64)
    te = te_raw[np.isfinite(te_raw)]
    for name, v in (("target_train_acc", target_train_acc), ("target_test_acc", target_test_acc)):
        if not (0.0 <= float(v) <= 1.0):
            raise InvalidInputError(f"{name}: expected an accuracy in [0, 1], got {v!r}")
    summary = {
        "shadow_train_acc_mean": float(tr.mean()), "shadow_train_acc_min": float(tr.min()),
        "shadow_test_acc_mean": float(te.mean()) if te.size else None,
        "target_train_acc": float(target_train_acc), "target_test_acc": float(target_test_acc),
        "n_shadows": int(tr.size), "max_gap": float(max_gap), "max_test_gap": max_test_gap,
    }
    gap = float(target_train_acc) - float(tr.mean())
    if gap > max_gap:
        raise ShadowFitError(
            f"shadow models underfit: their mean train accuracy {tr.mean():.3f} (worst {tr.min():.3f}, "
            f"{tr.size} shadows) is {gap:.3f} below the target's {float(target_train_acc):.3f}, more than "
            f"the allowed gap {max_gap}; train the shadows like the target (more epochs, larger learning rate)")
    if max_test_gap is not None and te.size:
        tgap = abs(float(target_test_acc) - float(te.mean()))
        if tgap > max_test_gap:
            raise ShadowFitError(
                f"shadow models generalise unlike the target: mean shadow test accuracy {te.mean():.3f} vs the "
                f"target's {float(target_test_acc):.3f} (gap {tgap:.3f} > allowed {max_test_gap})")
    return summary


@dataclass
class FitCheck:
    """Accuracies to check with :func:`check_fit` before an attack reports (passed as ``fit_check=``)."""

    shadow_train_acc: Any
    shadow_test_acc: Any
    target_train_acc: float
    target_test_acc: float
    max_gap: float = 0.1
    max_test_gap: float | None = None

    @classmethod
    def from_ensemble(cls, shadows: Ensemble, target_train_acc: float, target_test_acc: float,
                      **kwargs: Any) -> "FitCheck":
        return cls(shadows.train_acc, shadows.test_acc, target_train_acc, target_test_acc, **kwargs)

    def check(self) -> dict[str, Any]:
        """Raise :class:`ShadowFitError` if the shadows did not fit; else the summary for ``extra``."""
        return check_fit(self.shadow_train_acc, self.shadow_test_acc, self.target_train_acc,
                         self.target_test_acc, self.max_gap, self.max_test_gap)
