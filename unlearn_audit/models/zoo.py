"""Model families. Inputs are flattened for the dense models; convolutional models take (C, H, W)."""

from __future__ import annotations

import math

import torch
from torch import nn

from unlearn_audit.models.functional import FunctionalModel, ModelError, probe_model
from unlearn_audit.plugins import describe_error, load_plugin, user_failure


class SoftmaxRegression(nn.Module):
    """Multinomial logistic regression: one linear layer (weight then bias in the flat layout)."""

    def __init__(self, n_features: int, n_classes: int):
        super().__init__()
        self.linear = nn.Linear(n_features, n_classes)

    def forward(self, x):
        return self.linear(x.flatten(1))


class MLP(nn.Module):
    """One hidden layer with tanh (smooth, so the Hessian is defined everywhere)."""

    def __init__(self, n_features: int, n_classes: int, hidden: int = 64):
        super().__init__()
        self.fc1 = nn.Linear(n_features, hidden)
        self.fc2 = nn.Linear(hidden, n_classes)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x.flatten(1))))


class SmallCNN(nn.Module):
    """The HF-OCU paper's CNN: conv 1→10 (5×5), max-pool, ReLU; conv 10→20 (5×5), max-pool, ReLU; fc 320→50, ReLU;
    fc 50→10. 21,840 parameters on 1×28×28 inputs."""

    def __init__(self, in_channels: int = 1, n_classes: int = 10, side: int = 28):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 10, 5)
        self.conv2 = nn.Conv2d(10, 20, 5)
        flat = 20 * (((side - 4) // 2 - 4) // 2) ** 2
        self.fc1 = nn.Linear(flat, 50)
        self.fc2 = nn.Linear(50, n_classes)

    def forward(self, x):
        x = torch.relu(torch.max_pool2d(self.conv1(x), 2))
        x = torch.relu(torch.max_pool2d(self.conv2(x), 2))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class LeNet5(nn.Module):
    """LeNet-5 for 28×28 inputs (first conv padded): 61,706 parameters with 10 classes."""

    def __init__(self, in_channels: int = 1, n_classes: int = 10, side: int = 28):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2 if side == 28 else 0)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, n_classes)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x.flatten(1))))))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, groups: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.gn1 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.gn2 = nn.GroupNorm(groups, cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.GroupNorm(groups, cout))

    def forward(self, x):
        out = torch.relu(self.gn1(self.conv1(x)))
        return torch.relu(self.gn2(self.conv2(out)) + self.shortcut(x))


class ResNet18GN(nn.Module):
    """ResNet-18 (CIFAR variant: 3×3 stem, no max-pool) with GroupNorm instead of BatchNorm, so a record's loss does
    not depend on its batch. About 11.2M parameters with 10 classes. No pretrained weights."""

    def __init__(self, in_channels: int = 3, n_classes: int = 10, groups: int = 32):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.gn = nn.GroupNorm(groups, 64)
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [_BasicBlock(cin, cout, stride, groups), _BasicBlock(cout, cout, 1, groups)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, n_classes)

    def forward(self, x):
        x = self.layers(torch.relu(self.gn(self.stem(x))))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


def softmax_probs_flat(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Class probabilities of softmax regression at flat weights w (weight rows, then bias)."""
    n, d = x.shape[0], x[0].numel()
    c = w.numel() // (d + 1)
    logits = x.reshape(n, d).to(w.dtype) @ w[: c * d].view(c, d).T + w[c * d:]
    return torch.softmax(logits, dim=1)


MODEL_KINDS = {
    "softmax": "multinomial logistic regression (closed-form Hessian path)",
    "mlp": "one-hidden-layer MLP with tanh (option: hidden)",
    "cnn": "the HF-OCU paper's small CNN (21,840 parameters on 1x28x28)",
    "lenet5": "LeNet-5 (61,706 parameters on 1x28x28)",
    "resnet18": "ResNet-18 with GroupNorm (about 11.2M parameters; images C x H x W)",
    "custom": "your nn.Module from model.factory = 'package.module:function' (checked before use)",
}

_IMAGE_MODELS = ("cnn", "lenet5", "resnet18")

#: zoo models whose loss is smooth in the weights (tanh, no kinks): the a-posteriori certificate applies to them
SMOOTH_KINDS = frozenset({"softmax", "mlp"})


def build_custom_model(factory: str, input_shape: tuple[int, ...], n_classes: int, *, seed: int = 0,
                       plugin_path: tuple[str, ...] | list[str] = ()) -> FunctionalModel:
    """Your model: ``factory`` names a function (``"package.module:function"``, imported from the environment or
    ``plugin_path``) called as ``function(input_shape, n_classes)`` under ``torch.manual_seed(seed)``; it returns an
    ``nn.Module`` mapping a batch of records, shape (m, *input_shape), to logits (m, n_classes). The module is used
    as returned (its training/eval mode included) and refused, with the reason, when a record's loss could depend on
    its batch (BatchNorm in training mode, dropout, or any layer that mixes records: :func:`probe_model`), when it
    does not run under vmap or autodiff's Hessian-vector products, or when its outputs have the wrong shape or are
    not finite. Errors are a ModelError naming the factory."""
    fn, info = load_plugin(factory, plugin_path, what="model factory")
    label = f"model factory '{factory}'"
    if not callable(fn):
        raise ModelError(f"{label}: '{info.attribute}' is a {type(fn).__name__}, not a function")
    torch.manual_seed(seed)
    try:
        module = fn(tuple(int(s) for s in input_shape), int(n_classes))
    except BaseException as err:                # noqa: BLE001 - user code may raise anything
        if not user_failure(err):
            raise
        raise ModelError(f"{label}: raised {describe_error(err)}") from None
    if not isinstance(module, nn.Module):
        raise ModelError(f"{label}: returned a {type(module).__name__}, not a torch.nn.Module")
    try:
        model = FunctionalModel(module, "custom", tuple(input_shape), n_classes, {"factory": factory}, plugin=info)
        if model.dim == 0:
            raise ModelError("the module has no parameters")
        probed = (info.spec, info.sha256, tuple(input_shape), int(n_classes), model.dim)
        if probed not in _PROBED:               # the audit builds hundreds of copies (paired models, shadows)
            probe_model(model, seed=seed)
            _PROBED.add(probed)
    except ModelError as err:
        raise ModelError(f"{label}: {err}") from None
    return model


_PROBED: set[tuple] = set()


def build_model(kind: str, input_shape: tuple[int, ...], n_classes: int, *, seed: int = 0,
                hidden: int = 64, zero_init: bool = False, factory: str | None = None,
                plugin_path: tuple[str, ...] | list[str] = ()) -> FunctionalModel:
    """Build a model of ``kind`` with deterministic initialisation from ``seed`` (``kind = "custom"``: your
    ``factory``, see :func:`build_custom_model`)."""
    if kind == "custom":
        if factory is None:
            raise ModelError("model 'custom' needs a factory ('package.module:function')")
        return build_custom_model(factory, input_shape, n_classes, seed=seed, plugin_path=plugin_path)
    n_features = math.prod(input_shape)
    torch.manual_seed(seed)
    options: dict = {}
    module: nn.Module
    if kind == "softmax":
        softmax = module = SoftmaxRegression(n_features, n_classes)
        if zero_init:
            nn.init.zeros_(softmax.linear.weight)
            nn.init.zeros_(softmax.linear.bias)
    elif kind == "mlp":
        module = MLP(n_features, n_classes, hidden)
        options["hidden"] = int(hidden)
    elif kind in _IMAGE_MODELS:
        shape = _image_shape(kind, input_shape)
        if kind == "cnn":
            module = SmallCNN(shape[0], n_classes, shape[1])
        elif kind == "lenet5":
            module = LeNet5(shape[0], n_classes, shape[1])
        else:
            module = ResNet18GN(shape[0], n_classes)
        input_shape = shape
    else:
        raise ModelError(f"unknown model '{kind}'; choose one of: {', '.join(MODEL_KINDS)}")
    module.eval()
    if kind in _IMAGE_MODELS:
        return FunctionalModel(_Reshape(module, tuple(input_shape)), kind, tuple(input_shape), n_classes, options)
    return FunctionalModel(module, kind, tuple(input_shape), n_classes, options, smooth=kind in SMOOTH_KINDS)


class _Reshape(nn.Module):
    """Accept flattened records (as the data loaders give them) and view them as images."""

    def __init__(self, net: nn.Module, shape: tuple[int, ...]):
        super().__init__()
        self.net = net
        self.shape = shape

    def forward(self, x):
        return self.net(x.reshape(x.shape[0], *self.shape))


def _image_shape(kind: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) for an image model; flat inputs of 784 / 3072 values are read as 1×28×28 / 3×32×32."""
    shape: tuple[int, int, int]
    if len(input_shape) == 3:
        c, h, w = (int(s) for s in input_shape)
        shape = (c, h, w)
    else:
        n = math.prod(input_shape)
        side1, side3 = math.isqrt(n), math.isqrt(n // 3) if n % 3 == 0 else 0
        if side1 * side1 == n:
            shape = (1, side1, side1)
        elif side3 and 3 * side3 * side3 == n:
            shape = (3, side3, side3)
        else:
            raise ModelError(f"model '{kind}' needs image inputs; got {n} features that are not a square image")
    if kind in ("cnn", "lenet5") and shape[1:] != (28, 28):
        raise ModelError(f"model '{kind}' expects 28x28 images, got {shape[1]}x{shape[2]}")
    return shape
