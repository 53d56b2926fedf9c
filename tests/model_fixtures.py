"""Tiny random transformers' Chameleon models saved as HF folders, in both q/k-norm layouts (no tests)."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

VOCAB, HIDDEN, HEADS, LAYERS = 300, 64, 4, 3
HEAD_DIM = HIDDEN // HEADS
HF_TINY_VQ = dict(
    embed_dim=4, num_embeddings=32, latent_channels=4, base_channels=32, channel_multiplier=[1, 2]
)


@contextmanager
def single_thread() -> Iterator[None]:
    """Tiny matmuls run fastest on one thread, above all on a shared, busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def tiny_hf_model(swin_norm: bool, kv_heads: int, shard_rows: int | None = None, seed: int = 0):
    """A random `ChameleonForConditionalGeneration` (eval, fp32) with non-trivial weights everywhere.

    With `shard_rows` = r, every q/k-norm parameter repeats r random rows over the heads, as the releases'
    `[model_parallel_size, head_dim]` layout does when expanded; otherwise each head has its own row.
    """
    from transformers import ChameleonConfig, ChameleonForConditionalGeneration

    torch.manual_seed(seed)
    config = ChameleonConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=96,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=kv_heads,
        swin_norm=swin_norm,
        model_parallel_size=shard_rows or 1,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0},
        vocabulary_map={"<image>": 3},
        vq_config=HF_TINY_VQ,
        attn_implementation="eager",
    )
    model = ChameleonForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith("model.vqmodel."):
                continue
            if "_norm." in name and param.dim() == 2:  # q/k-norm [heads, head_dim]
                rows = shard_rows or param.shape[0]
                base = torch.randn(rows, HEAD_DIM) * 0.5 + (1.0 if name.endswith("weight") else 0.0)
                param.copy_(base.repeat_interleave(param.shape[0] // rows, dim=0))
            elif "norm" in name:
                param.copy_(1.0 + 0.3 * torch.randn_like(param))
            else:
                param.normal_(0.0, 1.5 / param.shape[-1] ** 0.5)
    return model


def save_hf_folder(model, folder: Path, shard_rows: int | None = None) -> Path:
    """`save_pretrained`, then (with `shard_rows`) rewrite the q/k norms in the releases' `[mp, head_dim]`
    layout: one row per model-parallel shard."""
    model.save_pretrained(folder)
    if shard_rows is not None:
        file = folder / "model.safetensors"
        state = load_file(file)
        for name, tensor in state.items():
            if "_norm." in name and tensor.dim() == 2:
                state[name] = tensor[:: tensor.shape[0] // shard_rows].contiguous()
        save_file(state, file, metadata={"format": "pt"})
        config = json.loads((folder / "config.json").read_text())
        assert config["model_parallel_size"] == shard_rows
    return folder


def hf_logits(model, ids: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, position_ids=position_ids).logits.float()
