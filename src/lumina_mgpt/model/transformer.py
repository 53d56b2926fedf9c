"""ChameleonTransformer: the decoder-only Chameleon network, with transformers' parameter names."""

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lumina_mgpt.embedding import Embedding
from lumina_mgpt.model.config import ChameleonConfig
from lumina_mgpt.model.kv_cache import KVCache

QK_NORM_EPS = 1e-5  # Chameleon's q/k LayerNorm epsilon is fixed, not taken from the config


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # statistics in float32, as transformers does
        return self.weight * F.rms_norm(x.float(), self.weight.shape, eps=self.eps).to(x.dtype)


class HeadNorm(nn.Module):
    """LayerNorm over head_dim with a separate weight and bias per head: parameters `[heads, head_dim]`."""

    def __init__(self, heads: int, head_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(heads, head_dim))
        self.bias = nn.Parameter(torch.zeros(heads, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, T, heads, head_dim]
        return torch.addcmul(self.bias, F.layer_norm(x, x.shape[-1:], eps=QK_NORM_EPS), self.weight)


class RotaryEmbedding(nn.Module):
    """Rotate-half RoPE. `inv_freq` is a non-persistent float32 buffer, rebuilt by `reset_parameters` and after
    every `.to()` / `.to_empty()` (a bfloat16 copy would shift the angles at large positions)."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        self.register_buffer("inv_freq", torch.empty(head_dim // 2), persistent=False)
        self.reset_parameters()

    def reset_parameters(self, device: torch.device | str | None = None) -> None:
        device = self.inv_freq.device if device is None else torch.device(device)
        if device.type == "meta":  # no values to compute (and arange there would import torch._dynamo)
            return
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=device)
        self.inv_freq = 1.0 / self.theta ** (exponents / self.head_dim)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> "RotaryEmbedding":
        super()._apply(fn, recurse)
        self.reset_parameters()
        return self

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin `[B, T, head_dim]` for integer positions `[B, T]`."""
        angles = positions[..., None].float() * self.inv_freq
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, T, heads, head_dim]; cos, sin: [B, T, head_dim]."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, :, None] + rotated * sin[:, :, None]


class Documents(NamedTuple):
    """Packed rows: `spans[b]` are the (start, end) runs of equal document index of row b, covering the row.
    Attention is causal within each run and never crosses one (each sample sees only itself)."""

    spans: list[list[tuple[int, int]]]

    @classmethod
    def of(cls, documents: torch.Tensor) -> "Documents":
        """The runs of document indices `[B, T]` (one host read per forward)."""
        length, spans = documents.shape[1], []
        for row in documents:
            cuts = (torch.nonzero(row[1:] != row[:-1]).flatten() + 1).tolist()
            spans.append(list(zip([0, *cuts], [*cuts, length], strict=True)))
        return cls(spans)

    def attend(self, q, k, v, dropout_p: float, enable_gqa: bool) -> torch.Tensor:
        """Causal SDPA of each run on its own, `[B, heads, T, head_dim]`: no compute on masked-out pairs."""
        rows = []
        for b, spans in enumerate(self.spans):
            rows.append(
                torch.cat(
                    [
                        F.scaled_dot_product_attention(
                            q[b : b + 1, :, s:e],
                            k[b : b + 1, :, s:e],
                            v[b : b + 1, :, s:e],
                            is_causal=True,
                            dropout_p=dropout_p,
                            enable_gqa=enable_gqa,
                        )
                        for s, e in spans
                    ],
                    dim=2,
                )
            )
        return torch.cat(rows)


class Attention(nn.Module):
    def __init__(self, config: ChameleonConfig, layer_index: int) -> None:
        super().__init__()
        self.layer_index = layer_index
        self.heads, self.kv_heads, self.head_dim = (
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
        )
        self.dropout = config.attention_dropout
        hidden, bias = config.hidden_size, config.attention_bias
        self.q_proj = nn.Linear(hidden, self.heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, self.kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, self.kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.heads * self.head_dim, hidden, bias=bias)
        self.q_norm = HeadNorm(self.heads, self.head_dim)
        self.k_norm = HeadNorm(self.kv_heads, self.head_dim)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        cache: KVCache | None,
        mask: torch.Tensor | Documents | None,
    ) -> torch.Tensor:
        batch, length, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(batch, length, self.heads, self.head_dim))
        k = self.k_norm(self.k_proj(x).view(batch, length, self.kv_heads, self.head_dim))
        v = self.v_proj(x).view(batch, length, self.kv_heads, self.head_dim)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, T, head_dim]
        if cache is not None:
            k, v = cache.update(self.layer_index, k, v)
        dropout, gqa = self.dropout if self.training else 0.0, self.kv_heads != self.heads
        if isinstance(mask, Documents):
            out = mask.attend(q, k, v, dropout, gqa)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None, dropout_p=dropout, enable_gqa=gqa
            )
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


class MLP(nn.Module):
    """SwiGLU feed-forward."""

    def __init__(self, config: ChameleonConfig) -> None:
        super().__init__()
        hidden, inner, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(hidden, inner, bias=bias)
        self.up_proj = nn.Linear(hidden, inner, bias=bias)
        self.down_proj = nn.Linear(inner, hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-norm `x + Drop(Attn(Norm(x)))`, or with `swin_norm` (34B) `x + Drop(Norm(Attn(x)))`; same for the
    MLP."""

    def __init__(self, config: ChameleonConfig, layer_index: int) -> None:
        super().__init__()
        self.swin_norm = config.swin_norm
        self.dropout = config.dropout
        self.self_attn = Attention(config, layer_index)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        cache: KVCache | None = None,
        mask: torch.Tensor | Documents | None = None,
    ) -> torch.Tensor:
        if self.swin_norm:
            h = self.input_layernorm(self.self_attn(x, rope, cache, mask))
        else:
            h = self.self_attn(self.input_layernorm(x), rope, cache, mask)
        x = x + self._drop(h)
        if self.swin_norm:
            h = self.post_attention_layernorm(self.mlp(x))
        else:
            h = self.mlp(self.post_attention_layernorm(x))
        return x + self._drop(h)

    def _drop(self, h: torch.Tensor) -> torch.Tensor:
        return F.dropout(h, self.dropout, training=True) if self.training and self.dropout else h


class ChameleonModel(nn.Module):
    """Embedding, decoder layers and final norm: token ids to normalised hidden states."""

    def __init__(self, config: ChameleonConfig) -> None:
        super().__init__()
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary = RotaryEmbedding(config.head_dim, config.rope_theta)

    def forward(
        self,
        input_ids: torch.Tensor,
        cache: KVCache | None = None,
        positions: torch.Tensor | None = None,
        documents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch, length = input_ids.shape
        mask = None if documents is None else Documents.of(documents)
        if cache is not None:
            positions, mask = cache.begin(length, positions)
        elif positions is None:
            positions = torch.arange(length, device=input_ids.device).expand(batch, length)
        x = self.embed_tokens(input_ids)
        if isinstance(mask, torch.Tensor):  # additive: the CPU attention kernels take it faster than a boolean one
            mask = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill(~mask, float("-inf"))
        rope = self.rotary(positions, x.dtype)
        for layer in self.layers:
            x = layer(x, rope, cache, mask)
        return self.norm(x)


class ChameleonTransformer(nn.Module):
    """Chameleon decoder with an untied `lm_head`; parameter names match transformers' checkpoints.

    `forward(input_ids[B, T], cache=None, positions=None) -> logits[B, T, V]` in float32. Without a cache the
    attention is plainly causal over the T tokens at positions 0..T-1 (or `positions`), or with `documents`
    (packed rows: each token's document index, `[B, T]`) causal within each document; with a cache row b's
    tokens are written at slots `cache.lengths[b] + t` and attend to the row's visible earlier slots.
    """

    def __init__(self, config: ChameleonConfig) -> None:
        super().__init__()
        self.config = config
        self.model = ChameleonModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def forward(
        self,
        input_ids: torch.Tensor,
        cache: KVCache | None = None,
        positions: torch.Tensor | None = None,
        documents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.logits(self.model(input_ids, cache, positions, documents))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 logits for hidden states from `self.model` (e.g. only the rows' last positions)."""
        return self.lm_head(hidden).float()

    @torch.no_grad()
    def grow_vocabulary(self, vocab_size: int) -> None:
        """Add embedding and head rows up to `vocab_size` tokens (those an extended tokenizer added after the
        model's): each new row is the mean of the existing rows of its matrix, so a new token starts as an
        average one, and every existing token keeps its rows."""
        old = self.config.vocab_size
        embedding, head = self.model.embed_tokens, self.lm_head
        for module, name in ((embedding, "num_embeddings"), (head, "out_features")):
            rows = module.weight.mean(0, keepdim=True).expand(vocab_size - old, -1)
            module.weight = nn.Parameter(torch.cat([module.weight, rows]))
            setattr(module, name, vocab_size)
        self.config.vocab_size = vocab_size

    @torch.no_grad()
    def init_weights(self) -> None:
        """Random initialisation (normal(0, initializer_range) linears and embeddings, unit norms), e.g. after
        building on the meta device and `to_empty`."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, RMSNorm | HeadNorm):
                nn.init.ones_(module.weight)
                if isinstance(module, HeadNorm):
                    nn.init.zeros_(module.bias)
            elif isinstance(module, RotaryEmbedding):
                module.reset_parameters()
