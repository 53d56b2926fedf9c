"""KVCache: a preallocated key/value cache with per-row lengths, RoPE positions and a key mask."""

from collections.abc import Sequence

import torch

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.model.config import ChameleonConfig

Rows = int | Sequence[int] | torch.Tensor | None
# Attention reads the first S slots, S = max(lengths) rounded up to this multiple: few distinct shapes, so
# attention kernels that plan per shape (cuDNN) and torch.compile re-plan rarely.
SPAN_MULTIPLE = 64


class KVCache:
    """Keys and values of every layer (one `[B, kv_heads, max_length, head_dim]` tensor per layer), written at
    per-row slots.

    Row b holds `lengths[b]` slots; the next token of row b goes to slot `lengths[b]` with RoPE position
    `positions[b]`. `key_mask[b, s]` False hides slot s from the other queries of row b (a token always sees
    itself); slots may be hidden before they are written, e.g. the prompt of an unconditional CFG row before
    the prefill. Rows may differ in length; a step may add 1..k tokens per row.

    A `static` cache (see `make_static`) attends over all `max_length` slots and keeps no host-side counts:
    every step has one shape and needs no host sync, so `torch.compile` captures it once; the caller
    guarantees the room.
    """

    def __init__(
        self,
        config: ChameleonConfig,
        batch_size: int,
        max_length: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        kv_heads: int | None = None,
    ) -> None:
        """`kv_heads`: the key/value heads held here (default all; a tensor-parallel rank holds 1/N)."""
        if batch_size < 1 or max_length < 1:
            raise LuminaError(
                f"KV cache: batch_size and max_length must be >= 1, got {batch_size}, {max_length}"
            )
        shape = (batch_size, kv_heads or config.num_key_value_heads, max_length, config.head_dim)
        # one tensor per layer: a compiled step writes into each in place
        layers = range(config.num_hidden_layers)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in layers]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in layers]
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.positions = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.key_mask = torch.ones(batch_size, max_length, dtype=torch.bool, device=device)
        self.batch_size = batch_size
        self.max_length = max_length
        self.static = False
        # min/max of `lengths`, mirrored on the host so that steps need no device sync.
        self._shortest = self._longest = 0
        # Set by `begin` for the layers of the current forward call.
        self._write_index: torch.Tensor | None = None
        self._span = 0

    @property
    def device(self) -> torch.device:
        return self.keys[0].device

    def make_static(self) -> None:
        """From now on attend over every slot and keep no host-side counts (no capacity check either)."""
        self.static = True
        self._span = self.max_length

    def begin(self, num_new: int, positions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reserve slots for `num_new` tokens of every row and advance lengths and positions.

        Returns the RoPE positions `[B, T]` of the new tokens and the boolean attention mask `[B, 1, T, S]`
        over the first S slots (max(lengths) after the step, rounded up to SPAN_MULTIPLE): query t of row b,
        at slot q = old_lengths[b] + t, sees slot s when `s < q and key_mask[b, s]`, or `s == q`.
        """
        batch, device = self.batch_size, self.device
        if not self.static and self._longest + num_new > self.max_length:
            needed = self.lengths + num_new
            row = int(needed.argmax())
            raise LuminaError(
                f"KV cache overflow: row {row} needs {int(needed[row])} slots, capacity {self.max_length}"
            )
        offsets = torch.arange(num_new, device=device)
        slots = self.lengths[:, None] + offsets  # [B, T]
        if positions is None:
            positions = self.positions[:, None] + offsets
        elif positions.shape != (batch, num_new):
            raise LuminaError(f"positions must have shape {(batch, num_new)}, got {tuple(positions.shape)}")
        span = self.max_length
        if not self.static:
            span = min(-(-(self._longest + num_new) // SPAN_MULTIPLE) * SPAN_MULTIPLE, span)
        key_slots = torch.arange(span, device=device)
        query_slots = slots[:, :, None]  # [B, T, 1]
        visible = ((key_slots < query_slots) & self.key_mask[:, None, :span]) | (key_slots == query_slots)
        mask = visible[:, None]  # [B, 1, T, S]
        self._write_index = (torch.arange(batch, device=device)[:, None], slots)  # (row, slot) per new token
        self._span = span
        self.lengths += num_new
        self.positions.copy_(positions[:, -1] + 1)
        if not self.static:
            self._shortest += num_new
            self._longest += num_new
        return positions, mask

    def update(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write one layer's new keys/values `[B, kv_heads, T, head_dim]` at the slots reserved by `begin`;
        return that layer's keys and values over the first S slots."""
        rows, slots = self._write_index  # an index_put_, which a compiled step does in place
        self.keys[layer][rows, :, slots] = keys.transpose(1, 2)
        self.values[layer][rows, :, slots] = values.transpose(1, 2)
        return self.keys[layer][:, :, : self._span], self.values[layer][:, :, : self._span]

    def rollback(self, r: int | torch.Tensor, rows: Rows = None) -> None:
        """Drop the last r tokens of `rows` (all rows if None), or of each row b its own `r[b]` when r is a
        LongTensor[B]. Positions move back by the same count."""
        if isinstance(r, int) and rows is None:
            if not 0 <= r <= self._shortest:
                raise LuminaError(f"KV cache rollback of {r} tokens: the shortest row holds {self._shortest}")
            self._unhide_dropped(self.lengths - r)
            self.lengths -= r
            self.positions -= r
            self._shortest -= r
            self._longest -= r
            return
        if isinstance(r, torch.Tensor):
            if rows is not None or r.shape != (self.batch_size,):
                raise LuminaError(f"KV cache rollback: r must be an int or a LongTensor[{self.batch_size}]")
            drop = r.to(device=self.device, dtype=torch.long)
        else:
            drop = torch.zeros(self.batch_size, dtype=torch.long, device=self.device)
            drop[_row_index(rows)] = r
        self._set(self.lengths - drop, self.positions - drop, "rollback")

    def set_lengths(
        self, lengths: torch.Tensor | Sequence[int], positions: torch.Tensor | None = None
    ) -> None:
        """Keep only the first `lengths[b]` slots of each row (after a right-padded prefill). Positions move
        back by the number of dropped slots unless given."""
        lengths = torch.as_tensor(lengths, dtype=torch.long, device=self.device)
        if lengths.shape != (self.batch_size,):
            raise LuminaError(
                f"set_lengths: expected {self.batch_size} lengths, got shape {tuple(lengths.shape)}"
            )
        if positions is None:
            positions = self.positions - (self.lengths - lengths)
        self._set(lengths, torch.as_tensor(positions, dtype=torch.long, device=self.device), "set_lengths")

    def restart(self, rows: torch.Tensor, keep: int = 0) -> None:
        """Cut the rows where the BoolTensor[B] `rows` is True back to their first `keep` slots, positions
        from `keep`, on the device (no sync; for a static cache, whose host counts are not kept)."""
        slots = torch.arange(self.max_length, device=self.device)
        self.key_mask |= rows[:, None] & (slots >= keep)
        self.lengths.masked_fill_(rows, keep)
        self.positions.masked_fill_(rows, keep)

    def hide(self, rows: Rows, start: int, end: int) -> None:
        """Hide slots `start..end-1` of `rows` (all rows if None) from attention, written yet or not."""
        if not 0 <= start <= end <= self.max_length:
            raise LuminaError(f"hide: slot range {start}..{end} is outside 0..{self.max_length}")
        self.key_mask[_row_index(rows), start:end] = False

    def reset(self) -> None:
        """Empty every row and make all slots visible again."""
        self.lengths.zero_()
        self.positions.zero_()
        self.key_mask.fill_(True)
        self._shortest = self._longest = 0

    def _set(self, lengths: torch.Tensor, positions: torch.Tensor, what: str) -> None:
        shortest, longest, grows = torch.stack(
            [lengths.min(), lengths.max(), (lengths > self.lengths).any().long()]
        ).tolist()
        if shortest < 0 or grows:
            raise LuminaError(
                f"KV cache {what}: new lengths {lengths.tolist()} must lie in 0..{self.lengths.tolist()}"
            )
        self._unhide_dropped(lengths)
        self.lengths.copy_(lengths)
        self.positions.copy_(positions)
        self._shortest, self._longest = shortest, longest

    def _unhide_dropped(self, new_lengths: torch.Tensor) -> None:
        """Dropped slots forget that they were hidden: they will hold new tokens."""
        slots = torch.arange(self.max_length, device=self.device)
        self.key_mask |= (slots >= new_lengths[:, None]) & (slots < self.lengths[:, None])


def _row_index(rows: Rows) -> slice | torch.Tensor | int | Sequence[int]:
    return slice(None) if rows is None else rows
