"""Process group, device and FSDP2 sharding. Under torchrun every rank joins the job's group; a plain process
is a world of one (gloo on CPU, nccl on CUDA), so one code path serves both."""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._composable import checkpoint
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from lumina_mgpt.devices import resolve_device


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: its rank, the world size and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> Runtime:
    """Join torchrun's process group (RANK/WORLD_SIZE in the environment) or make a world of one.

    `device` defaults (None or "auto") to this rank's CUDA device when CUDA is available, else the CPU.
    """
    if device in (None, "auto"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    device = resolve_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend, device_id = ("nccl", device) if device.type == "cuda" else ("gloo", None)
    if not dist.is_initialized():
        if "RANK" in os.environ:
            dist.init_process_group(backend, device_id=device_id)
        else:
            dist.init_process_group(
                backend, store=dist.HashStore(), rank=0, world_size=1, device_id=device_id
            )
    return Runtime(dist.get_rank(), dist.get_world_size(), device)


def shard_model(model: nn.Module, *, bf16: bool, activation_checkpointing: bool) -> None:
    """FSDP2 in place: one `fully_shard` unit per decoder layer (`model.model.layers`), then the root.

    `bf16` computes in bfloat16 with float32 master weights and float32 gradient reduction;
    `activation_checkpointing` recomputes each layer's activations in the backward pass.
    """
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if bf16
        else (MixedPrecisionPolicy())
    )
    layers = list(model.model.layers)
    for index, layer in enumerate(layers):
        if activation_checkpointing:
            checkpoint(layer)
        # the last layer stays gathered after forward: backward needs it at once
        fully_shard(layer, mp_policy=policy, reshard_after_forward=index < len(layers) - 1)
    fully_shard(model, mp_policy=policy)


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sums over all ranks (float64)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()
