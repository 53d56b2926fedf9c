"""The start-up summary of a run (what it trains, on how much data, for how long, in how much memory)."""

import resource

import torch
from torch import nn

from lumina_mgpt.train.config import TrainConfig
from lumina_mgpt.train.distributed import Runtime

MIB = 2**20


def startup_summary(model: nn.Module, config: TrainConfig, runtime: Runtime, step: int) -> str:
    """Parameters, trainable parameters, effective batch, steps, and the memory that weights, gradients and
    AdamW state take (computed from the counts: float32 master weights, bf16 copies not included)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    accumulation = config.global_batch_size // (runtime.world_size * config.micro_batch_size)
    kind = "full fine-tuning" if config.lora is None else f"LoRA rank {config.lora.rank}"
    weights, state = 4 * total, 4 * trainable * 3  # fp32 weights; gradient + Adam's two moments
    return "\n".join(
        [
            f"{kind}: {total:,} parameters, {trainable:,} trainable ({100 * trainable / total:.2f} %)",
            f"effective batch {config.global_batch_size} samples = {runtime.world_size} rank(s) x micro-batch "
            f"{config.micro_batch_size} x {accumulation} accumulation step(s); steps {step} -> "
            f"{config.total_steps}",
            f"memory (computed, over all ranks): weights {weights / MIB:.1f} MiB + gradients and AdamW state "
            f"{state / MIB:.1f} MiB, plus activations",
        ]
    )


def stage_summary(name: str, steps: int, lengths: list[int] | None) -> str:
    """The line of a stage starting: its steps and, for shard data, its samples and tokens."""
    data = "" if lengths is None else f", {len(lengths):,} samples, {sum(lengths):,} tokens"
    return f"stage {name!r}: {steps} steps{data}"


def first_step_summary(seconds: float, remaining_steps: int, device: torch.device) -> str:
    """The measured time of the first step, the ETA it gives and the peak memory so far."""
    if device.type == "cuda":
        peak = f"peak GPU memory {torch.cuda.max_memory_allocated(device) / MIB:.0f} MiB"
    else:
        peak = f"peak process memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    eta = seconds * remaining_steps
    return f"first step {seconds:.2f} s: ETA {eta / 60:.1f} min for {remaining_steps} more steps; {peak}"
