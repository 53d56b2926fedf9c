"""LoRA fine-tuning through peft: adapters on the decoder's linear layers, merged back into plain weights."""

import torch
from torch import nn

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.train.config import LoraSettings


def add_adapters(model: nn.Module, settings: LoraSettings, seed: int) -> nn.Module:
    """Put peft LoRA adapters (A drawn from `seed`, B zero) on `model`'s `settings.targets` linears, in place;
    only the adapters stay trainable. On the meta device it only shapes them (the weights come later)."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise LuminaError("LoRA needs peft: pip install 'lumina-mgpt[train]'") from None
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=2 * settings.rank if settings.alpha is None else settings.alpha,
        target_modules=list(settings.targets),
        lora_dropout=settings.dropout,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return inject_adapter_in_model(config, model)


def merge_adapters(model: nn.Module) -> nn.Module:
    """Fold every LoRA adapter of `model` into its base linear (W + scale * B @ A) and put the plain linear
    back in its place, so the state dict has the original names; in place."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())
    return model


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
