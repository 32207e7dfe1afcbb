"""Where tensors live: the one rule for the ``device`` setting (the unlearner, the sharded precompute)."""

from __future__ import annotations

import torch

__all__ = ["DEVICES", "resolve_device"]

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str, local_rank: int = 0, local_world_size: int = 1) -> torch.device:
    """``cpu``, ``cuda`` or ``auto`` for process ``local_rank`` of ``local_world_size`` on this machine.

    ``auto``: ``cuda:local_rank`` when CUDA has one GPU for each local process, else the CPU. ``cuda``: that GPU, and a
    ValueError when there is none (or fewer GPUs than local processes): asking for a GPU never silently runs on the
    CPU.
    """
    if device not in DEVICES:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got '{device}'")
    if device == "cpu":
        return torch.device("cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count >= local_world_size:
        return torch.device("cuda", local_rank) if local_world_size > 1 else torch.device("cuda")
    if device == "cuda":
        if count == 0:
            raise ValueError("device 'cuda' requested but no CUDA GPU is available; use 'auto' or 'cpu'")
        raise ValueError(f"device 'cuda' for {local_world_size} processes but {count} GPU(s) on this machine "
                         "(one per process is needed); use 'auto' or 'cpu'")
    return torch.device("cpu")
