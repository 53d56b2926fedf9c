"""The training loop: FP-SFT stages and Omni-SFT mixtures on torchrun + FSDP2, resumable bit for bit.

Per step: this rank's share of the global batch, the context drop, micro-batches grouped by length with gradient
accumulation, cross-entropy + z-loss normalised by the global target count, clipping, AdamW with the stage's
warm-up + cosine rate. Checkpoints (DCP) resume automatically from the output folder; at the end the model is
exported as an HF-format folder with a model card (LoRA adapters merged into the weights). With `validation`
the held-out loss is logged every N steps and sample images saved as a grid; each checkpoint redraws
OUT/loss.png. With a time limit the run checkpoints and stops after the step that passes it
(e.g. inside a batch job's or a lent machine's time), and the same command resumes it.
"""

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

from lumina_mgpt.data.batch import collate, context_drop_flags, drop_context, micro_batches
from lumina_mgpt.data.packing import idle_batch, packed_micro_batches
from lumina_mgpt.data.sampler import rank_share
from lumina_mgpt.data.shards import Sample
from lumina_mgpt.data.sources import ShardSource
from lumina_mgpt.errors import LuminaError
from lumina_mgpt.model.checkpoint import load_transformer
from lumina_mgpt.model.config import ChameleonConfig
from lumina_mgpt.model.transformer import ChameleonTransformer
from lumina_mgpt.text import TextTokenizer
from lumina_mgpt.train.card import write_model_card
from lumina_mgpt.train.checkpoint import Checkpointer
from lumina_mgpt.train.config import TrainConfig
from lumina_mgpt.train.distributed import Runtime, all_reduce_sum, init_distributed, shard_model
from lumina_mgpt.train.export import export_model
from lumina_mgpt.train.lora import add_adapters, trainable_parameters
from lumina_mgpt.train.losses import count_targets, lm_losses
from lumina_mgpt.train.metrics import MetricsLog
from lumina_mgpt.train.plots import save_loss_curve
from lumina_mgpt.train.schedule import learning_rate
from lumina_mgpt.train.summary import first_step_summary, stage_summary, startup_summary
from lumina_mgpt.train.validation import Validator
from lumina_mgpt.unirep import buckets
from lumina_mgpt.vocab import TokenLayout


def train(
    config: TrainConfig, out: str | os.PathLike, init_from: str | None = None, time_limit: float | None = None
) -> Path | None:
    """Train `config` into `out` (resuming from its latest checkpoint) and return the exported model folder; with
    `time_limit` (seconds), checkpoint and return None after the first step that ends past it."""
    deadline = None if time_limit is None else time.monotonic() + time_limit
    out = Path(out)
    runtime = init_distributed(config.device)
    per_step = runtime.world_size * config.micro_batch_size
    if config.global_batch_size % per_step:
        raise LuminaError(
            f"global_batch_size {config.global_batch_size} is not a multiple of world size "
            f"{runtime.world_size} x micro_batch_size {config.micro_batch_size}"
        )
    check_world_areas(config)
    run = restore(config, out, init_from, runtime)
    if run.step > config.total_steps:
        raise LuminaError(
            f"{run.latest} is past this config's last step ({config.total_steps}): it was trained with more "
            "steps; use another --out, or --export to write that checkpoint as a model"
        )
    run.checkpointer.remove_unfinished()  # left by a crash; not in `restore`, which also serves live exports
    model, optimizer, step, position = run.model, run.optimizer, run.step, run.position
    validator = None if config.validation is None else Validator(config, runtime)
    log = MetricsLog(
        out, total_steps=config.total_steps, start_step=step, every=config.log_every, enabled=runtime.is_main
    )
    first_step, started = step + 1, time.monotonic()
    try:  # closing the progress bar first puts an error on a line of its own
        log.write(startup_summary(model, config, runtime, step))
        if run.latest is not None:
            log.write(f"resuming from {run.latest} (step {step})")
        source, source_stage = None, -1
        while step < config.total_steps:
            stage_index, stage_step = config.stage_at(step)
            stage = config.stages[stage_index]
            if stage_index != source_stage:
                source, source_stage = make_source(config, stage_index, runtime), stage_index
                if position is not None and position["stage"] == stage_index:
                    source.load_state_dict(position["position"])
                shards = source.samples.lengths.tolist() if isinstance(source, ShardSource) else None
                log.write(stage_summary(stage.name, stage.steps, shards))
                if isinstance(source, ShardSource) and source.too_long:
                    log.write(
                        f"  {source.too_long} samples longer than max_length {config.max_length} are skipped"
                    )
            lr = learning_rate(
                stage_step,
                lr=stage.lr,
                min_lr=stage.lr if stage.min_lr is None else stage.min_lr,
                warmup_steps=stage.warmup_steps,
                total_steps=stage.steps,
            )
            scalars, tokens = train_step(model, optimizer, next(source), config, runtime, step, lr)
            step += 1
            for name in ("loss", "grad_norm"):  # global values: every rank stops at the same step
                if not math.isfinite(scalars[name]):
                    latest = run.checkpointer.latest()
                    raise LuminaError(
                        f"{name} became {scalars[name]} at step {step} (stage {stage.name!r}, lr {lr:.3g}); "
                        f"nothing was saved, the last checkpoint ({latest or 'none'}) is kept: lower the "
                        "stage's lr or check the data, then run again"
                    )
            if validator is not None and validator.loss_due(step):
                scalars["val_loss"] = validator.loss(model)
            log.step(step, tokens, scalars)
            if step == first_step:
                elapsed = time.monotonic() - started
                log.write(first_step_summary(elapsed, config.total_steps - step, runtime.device))
            if validator is not None and validator.samples_due(step):
                grid = validator.save_samples(model, step, out / "samples", stage.area)
                log.write(f"samples of step {step}: {grid}")
            stopping = deadline is not None and step < config.total_steps and _past(deadline, runtime)
            if stopping or step % config.checkpoint_every == 0 or step == config.total_steps:
                data = json.dumps({"stage": stage_index, "position": source.state_dict()})
                run.checkpointer.save(step, model, optimizer, {"step": step, "data": data})
                if runtime.is_main:
                    save_loss_curve(out)
            if stopping:
                log.write(
                    f"time limit reached: stopped after step {step} of {config.total_steps}; the same "
                    "command resumes the run"
                )
                return None
    finally:
        log.close()
    folder = export_model(model, config, out / "model", runtime)
    if runtime.is_main:
        write_model_card(folder, config, out)
    dist.barrier()
    return folder


def check_world_areas(config: TrainConfig) -> None:
    """Refuse a world stage whose area has canvases wider or taller than the layout's size tokens reach,
    before any model or data is made."""
    worlds = [(index, stage) for index, stage in enumerate(config.stages) if stage.data.world is not None]
    if not worlds:
        return
    layout = TokenLayout.from_tokenizer(config.tokenizer, config.layout)
    largest = layout.max_size_units * layout.size_unit_px
    for index, stage in worlds:
        side = max(max(size) for size in buckets(stage.area, max_ratio=stage.data.world.max_aspect))
        if side > largest:
            raise LuminaError(
                f"stages[{index}] ({stage.name!r}): area {stage.area} has canvases of side {side} px, larger "
                f"than layout {layout.name}'s largest image side, {largest} px: lower the area or its "
                "data.world.max_aspect"
            )


def _past(deadline: float, runtime: Runtime) -> bool:
    """Whether any rank is past `deadline` (so that every rank stops after the same step)."""
    (late,) = all_reduce_sum([float(time.monotonic() > deadline)], runtime.device)
    return late > 0


def export_latest(
    config: TrainConfig, out: str | os.PathLike, dest: str | os.PathLike, init_from: str | None = None
) -> Path:
    """Write the model of `out`'s latest checkpoint to `dest` as an HF-format folder (e.g. to evaluate a run
    while it trains); `init_from` as the run was started, which sets the model's shape."""
    runtime = init_distributed(config.device)
    run = restore(config, Path(out), init_from, runtime)
    if run.latest is None:
        raise LuminaError(f"no complete checkpoint under {Path(out) / 'checkpoints'}")
    folder = export_model(run.model, config, dest, runtime)
    if runtime.is_main:
        write_model_card(folder, config, Path(out))
    return folder


@dataclass
class RunState:
    """A run as restored: its model, optimiser and checkpointer, the checkpoint it resumed from (None for a new
    run), the step reached and the data position saved with it (None for a new run)."""

    model: ChameleonTransformer
    optimizer: torch.optim.Optimizer
    checkpointer: Checkpointer
    latest: Path | None
    step: int
    position: dict | None


def restore(config: TrainConfig, out: Path, init_from: str | None, runtime: Runtime) -> RunState:
    """Build the model and optimiser of a run and restore them from `out`'s latest complete checkpoint when
    there is one."""
    cuda = runtime.device.type == "cuda"
    model = build_model(
        config,
        init_from or config.init_from,
        runtime,
        bf16=cuda if config.bf16 == "auto" else config.bf16,
        activation_checkpointing=cuda
        if config.activation_checkpointing == "auto"
        else config.activation_checkpointing,
    )
    torch.manual_seed(config.seed + 1 + runtime.rank)  # dropout; checkpoints carry the state from here on
    optimizer = torch.optim.AdamW(
        trainable_parameters(model),
        lr=config.stages[0].lr,
        betas=config.betas,
        weight_decay=config.weight_decay,
    )
    checkpointer = Checkpointer(
        out / "checkpoints", config.keep_checkpoints, runtime, trainable_only=config.lora is not None
    )
    step, position = 0, None
    latest = checkpointer.latest()
    if latest is not None:
        saved = checkpointer.load(latest, model, optimizer, {"step": 0, "data": ""})
        step, position = saved["step"], json.loads(saved["data"])
    return RunState(model, optimizer, checkpointer, latest, step, position)


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    samples: list[Sample],
    config: TrainConfig,
    runtime: Runtime,
    step: int,
    lr: float,
) -> tuple[dict[str, float], int]:
    """One optimiser step on this rank's `samples`; returns the global scalars and token count."""
    flags = context_drop_flags(config.seed, step, config.global_batch_size, config.context_drop)
    samples = drop_context(samples, rank_share(flags, runtime.rank, runtime.world_size))
    if config.pack_length is None:
        micro = [(*collate(group), None, None) for group in micro_batches(samples, config.micro_batch_size)]
    else:  # rows of several samples; ranks with fewer micro-batches run idle ones to keep step
        micro = packed_micro_batches(samples, config.pack_length, config.micro_batch_size)
        most = torch.tensor(len(micro), device=runtime.device)
        dist.all_reduce(most, op=dist.ReduceOp.MAX)
        micro += [idle_batch()] * (int(most) - len(micro))
    local_tokens = sum(len(s) for s in samples)
    (targets,) = all_reduce_sum([sum(count_targets(batch[1]) for batch in micro)], runtime.device)
    sums = torch.zeros(2, dtype=torch.float64, device=runtime.device)
    for index, (ids, labels, positions, documents) in enumerate(micro):
        model.set_requires_gradient_sync(index == len(micro) - 1)
        packing = {} if positions is None else dict(positions=positions, documents=documents)
        logits = model(ids.to(runtime.device), **{k: v.to(runtime.device) for k, v in packing.items()})
        cross_entropy, z_loss = lm_losses(logits, labels.to(runtime.device), max(targets, 1.0))
        # FSDP averages gradients over ranks; the losses are already shares of the global mean
        ((cross_entropy + config.z_loss_weight * z_loss) * runtime.world_size).backward()
        sums += torch.stack([cross_entropy.detach(), z_loss.detach()]).double()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip).full_tensor()
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    dist.all_reduce(sums)
    (tokens,) = all_reduce_sum([local_tokens], runtime.device)
    loss, z = sums.tolist()
    return {"loss": loss, "z_loss": z, "lr": lr, "grad_norm": float(grad_norm)}, int(tokens)


def build_model(
    config: TrainConfig,
    init_from: str | None,
    runtime: Runtime,
    *,
    bf16: bool,
    activation_checkpointing: bool,
) -> ChameleonTransformer:
    """The sharded model: rank 0 loads `init_from` or initialises a from-scratch model (seeded; its
    vocab_size defaults to the tokenizer's), the other ranks build on the meta device, and rank 0's weights
    are broadcast into the shards."""
    vocab = None if config.tokenizer is None else TextTokenizer.from_folder(config.tokenizer).vocab_size
    full = None
    if runtime.is_main:
        if init_from is not None:
            full = load_transformer(init_from, dtype=torch.float32, device="cpu")
            if vocab is not None and full.config.vocab_size < vocab and config.grow_vocabulary:
                full.grow_vocabulary(vocab)
        else:
            torch.manual_seed(config.seed)
            fields = {"vocab_size": vocab, **config.model} if vocab is not None else config.model
            full = ChameleonTransformer(ChameleonConfig.from_dict(fields, source="config: model"))
            full.init_weights()
        if config.lora is not None:
            add_adapters(full, config.lora, config.seed)
    payload = [full.config.to_dict() if full is not None else None]
    dist.broadcast_object_list(payload, src=0)
    model_config = ChameleonConfig.from_dict(payload[0])
    if vocab is not None and model_config.vocab_size < vocab:
        raise LuminaError(
            f"the model's vocab_size {model_config.vocab_size} is smaller than the tokenizer's "
            f"{vocab} tokens ({config.tokenizer}); set grow_vocabulary: true to add rows for the new tokens"
        )
    if config.dropout is not None:
        model_config.dropout = config.dropout
    with torch.device("meta"):
        model = ChameleonTransformer(model_config)
        if config.lora is not None:
            add_adapters(model, config.lora, config.seed)
    shard_model(model, bf16=bf16, activation_checkpointing=activation_checkpointing)
    model.to_empty(device=runtime.device)
    model.model.rotary.reset_parameters()  # a non-persistent buffer: in no state dict
    state = full.state_dict() if full is not None else {}
    set_model_state_dict(
        model, state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    )
    model.train()
    return model


def make_source(config: TrainConfig, stage_index: int, runtime: Runtime):
    """The batch source of a stage: shard folders or the shapes world."""
    stage = config.stages[stage_index]
    seed = config.seed + 1000 * stage_index
    if stage.data.world is not None:
        from lumina_mgpt.data.world_source import WorldSource, WorldSpec  # the world: slow to import

        spec = WorldSpec(
            dict(stage.data.world.tasks),
            stage.area,
            config.tokenizer,
            config.layout,
            config.image_tokenizer,
            seed,
            config.max_length,
            stage.data.world.max_aspect,
        )
        return WorldSource(
            spec,
            batch_size=config.global_batch_size,
            rank=runtime.rank,
            world_size=runtime.world_size,
            device=runtime.device,
            workers=config.data_workers,
        )
    return ShardSource(
        stage.data.shards,
        batch_size=config.global_batch_size,
        seed=seed,
        rank=runtime.rank,
        world_size=runtime.world_size,
        task_ratios=stage.data.task_ratios,
        max_length=config.max_length,
        area=stage.area,
    )
