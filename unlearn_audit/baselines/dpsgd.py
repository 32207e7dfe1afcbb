"""DP-SGD with Opacus: "privacy by training", the alternative to unlearning (DESIGN §2.5).

The model is trained once with per-sample clipping at C and Gaussian noise, the noise multiplier chosen by Opacus's
accountant for the target (ε, δ) over the same epochs and (expected) batch size as the target model; Poisson
sampling (Opacus's default), step size η_0·γ^t per step, λ as weight decay. No deletion step follows.

Its guarantee is per record: every single record's influence is (ε, δ)-bounded. For a forget set of m records it is
only the group-privacy guarantee (mε, m·e^{(m−1)ε}·δ), which is vacuous for any sizeable m; the result says so.
Opacus is used for training and its accountant only (its RDP accountant with default orders cannot certify small ε at
δ = 1e-5; PAPERS.md).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass

import torch

from unlearn_audit.models import FunctionalModel
from unlearn_audit.training import SGDConfig


@dataclass
class DPSGDResult:
    weights: torch.Tensor
    epsilon: float
    delta: float
    target_epsilon: float
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int
    accountant: str
    seconds: float

    def certificate(self, n_forget: int) -> dict:
        m = int(n_forget)
        group_eps = m * self.epsilon
        log_group_delta = math.log(m) + (m - 1) * self.epsilon + math.log(self.delta) if m > 0 else -math.inf
        return {"kind": "differential privacy of training (Opacus DP-SGD), per record; not an unlearning certificate",
                "epsilon": self.epsilon, "delta": self.delta, "target_epsilon": self.target_epsilon,
                "accountant": self.accountant, "noise_multiplier": self.noise_multiplier,
                "max_grad_norm": self.max_grad_norm, "sample_rate": self.sample_rate, "steps": self.steps,
                "group_privacy_for_forget_set": {
                    "n_forget": m, "epsilon": group_eps,
                    "delta": min(1.0, math.exp(min(log_group_delta, 0.0))),
                    "note": "per-record DP gives only (m·ε, m·e^((m−1)ε)·δ) for m records deleted together"}}


def train_dpsgd(model: FunctionalModel, x: torch.Tensor, y: torch.Tensor, sgd: SGDConfig, *, epsilon: float,
                delta: float, max_grad_norm: float = 1.0, accountant: str = "rdp", seed: int = 0) -> DPSGDResult:
    """Train a copy of ``model`` (same initial weights) with DP-SGD at target (ε, δ); returns flat weights and the
    ε that Opacus's accountant reports for δ."""
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    module = copy.deepcopy(model.module).float()
    module.train()                                   # Opacus only captures per-sample gradients in train mode
    torch.manual_seed(seed)
    loader = DataLoader(TensorDataset(x.float(), y), batch_size=sgd.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.SGD(module.parameters(), lr=sgd.lr, weight_decay=sgd.lam)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant=accountant)
        try:
            dp_module, dp_opt, dp_loader = engine.make_private_with_epsilon(
                module=module, optimizer=opt, data_loader=loader, target_epsilon=epsilon, target_delta=delta,
                epochs=sgd.epochs, max_grad_norm=max_grad_norm,
                noise_generator=torch.Generator().manual_seed(seed + 1))
        except ValueError as err:
            raise ValueError(f"dpsgd: Opacus ({accountant} accountant) cannot reach epsilon={epsilon}, "
                             f"delta={delta} over {sgd.epochs} epochs: {err}") from None
        sched = torch.optim.lr_scheduler.LambdaLR(dp_opt, lambda t: sgd.decay ** t)
        steps = 0
        for _ in range(sgd.epochs):
            for xb, yb in dp_loader:
                dp_opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(dp_module(xb), yb)
                loss.backward()
                dp_opt.step()
                sched.step()
                steps += 1
        spent = float(engine.get_epsilon(delta))
    seconds = time.perf_counter() - start
    w = torch.cat([p.detach().reshape(-1) for p in module.parameters()]).to(torch.float32)
    module.eval()
    return DPSGDResult(w, spent, float(delta), float(epsilon), float(dp_opt.noise_multiplier), float(max_grad_norm),
                       float(1.0 / len(dp_loader)), steps, accountant, seconds)
