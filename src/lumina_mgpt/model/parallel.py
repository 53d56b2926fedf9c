"""Tensor-parallel inference for the Chameleon transformer on PyTorch's DTensor (torchtitan's plan).

    mesh = tensor_parallel_mesh(2, device)      # inside a torchrun job of 2 processes
    apply_tensor_parallel(model, mesh)

q/k/v and gate/up are split column-wise, o and down row-wise (their partial sums all-reduced by DTensor), so
each rank holds 1/N of the heads, key/value heads, MLP width and (through `cache_heads`) KV cache. The per-head
q/k-norm parameters are cut to the rank's heads. The embedding is split over the vocabulary (row-wise) and
`lm_head` column-wise with its logits gathered, so every rank sees the same full logits and, with the same
seeds, samples the same tokens: the decode loop runs unchanged on every rank.
"""

import math
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import Replicate
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.model.config import ChameleonConfig
from lumina_mgpt.model.transformer import ChameleonTransformer, HeadNorm

LAYER_PLAN = {
    "self_attn.q_proj": ColwiseParallel(),
    "self_attn.k_proj": ColwiseParallel(),
    "self_attn.v_proj": ColwiseParallel(),
    "self_attn.o_proj": RowwiseParallel(),
    "mlp.gate_proj": ColwiseParallel(),
    "mlp.up_proj": ColwiseParallel(),
    "mlp.down_proj": RowwiseParallel(),
}


def check_divisible(config: ChameleonConfig, size: int) -> None:
    """One-line error unless the heads and key/value heads split evenly over `size` ranks."""
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    if heads % size or kv_heads % size:
        raise LuminaError(
            f"--tensor-parallel {size}: the model's {heads} attention heads and {kv_heads} key/value heads "
            f"must both be divisible by {size}; use a divisor of {math.gcd(heads, kv_heads)}"
        )


def tensor_parallel_mesh(size: int, device: torch.device) -> DeviceMesh:
    """The 1-D mesh of this torchrun job (gloo on the CPU, NCCL on CUDA); one-line errors outside torchrun or
    when `size` is not the job's world size."""
    if size < 1:
        raise LuminaError(f"--tensor-parallel must be >= 1, got {size}")
    world = os.environ.get("WORLD_SIZE")
    if world is None:
        raise LuminaError(
            f"--tensor-parallel {size} needs a torchrun job: torchrun --nproc-per-node {size} lumina-mgpt ..."
        )
    if int(world) != size:
        raise LuminaError(
            f"--tensor-parallel {size} does not match the torchrun world size {world}; "
            f"use --nproc-per-node {size} or --tensor-parallel {world}"
        )
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    elif device.type != "cpu":
        raise LuminaError(f"tensor parallelism runs on cpu (gloo) or cuda (NCCL), not {device.type}")
    if not dist.is_initialized():  # gloo on every rank (NCCL is made lazily), so ranks can compare devices
        dist.init_process_group("cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo")
    check_same_device(device.type)
    return init_device_mesh(device.type, (size,))


def check_same_device(device_type: str) -> None:
    """One-line error on every rank unless all ranks of the job run on the same kind of device."""
    types: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(types, device_type)
    if len(set(types)) > 1:
        ranks = ", ".join(f"rank {rank} {kind}" for rank, kind in enumerate(types))
        raise LuminaError(
            f"every rank must use the same --device, got {ranks}; pass the same --device to all"
        )


def apply_tensor_parallel(model: ChameleonTransformer, mesh: DeviceMesh) -> ChameleonTransformer:
    """Shard `model` in place over the 1-D `mesh`; returns it. Its forward gives every rank the full logits."""
    size, rank = mesh.size(), mesh.get_local_rank()
    check_divisible(model.config, size)
    for layer in model.model.layers:
        parallelize_module(layer, mesh, LAYER_PLAN)
        attn = layer.self_attn
        attn.heads //= size
        attn.kv_heads //= size
        for norm in (attn.q_norm, attn.k_norm):
            _keep_heads(norm, rank, size)
    parallelize_module(
        model,
        mesh,
        {
            "model.embed_tokens": RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate()),
            "lm_head": ColwiseParallel(output_layouts=Replicate()),
        },
    )
    return model


def owns_files() -> bool:
    """Whether this process writes files and answers HTTP: rank 0 of a tensor-parallel job, or a lone process."""
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


def cache_heads(model: nn.Module) -> int:
    """The key/value heads this process's KV cache holds (all of them without tensor parallelism)."""
    return model.model.layers[0].self_attn.kv_heads


def full_weight(weight: torch.Tensor) -> torch.Tensor:
    """A plain tensor of a (maybe sharded) weight, gathered when it is a DTensor."""
    return weight.full_tensor() if hasattr(weight, "full_tensor") else weight


def local_index(local: torch.Tensor, full_shape: tuple[int, ...], mesh: DeviceMesh) -> tuple[slice, ...]:
    """Where this rank's part of a tensor of `full_shape` lies in it, for the (maybe sharded) parameter `local`
    of a model split by `apply_tensor_parallel`: a DTensor's shard (torch.chunk's split, as DTensor's), or the
    rank's block of rows of a per-head norm cut to its heads."""
    index = [slice(None)] * len(full_shape)
    rank, size = mesh.get_local_rank(), mesh.size()
    placements = getattr(local, "placements", ())
    for placement in placements:
        if placement.is_shard():
            dim = placement.dim
            start = min(rank * math.ceil(full_shape[dim] / size), full_shape[dim])
            index[dim] = slice(start, start + local.to_local().shape[dim])
    if not placements and tuple(local.shape) != tuple(full_shape):  # a per-head norm: contiguous heads
        block = local.shape[0]
        index[0] = slice(rank * block, (rank + 1) * block)
    return tuple(index)


def _keep_heads(norm: HeadNorm, rank: int, size: int) -> None:
    """Cut a per-head norm to this rank's contiguous block of heads (the block its q/k projection computes)."""
    block = norm.weight.shape[0] // size
    for name in ("weight", "bias"):
        local = getattr(norm, name).detach()[rank * block : (rank + 1) * block].clone()
        setattr(norm, name, nn.Parameter(local, requires_grad=False))
