"""Uni-Rep grammar for decoding: a per-row state machine indexing precomputed additive masks.

An image block is `start, size(H), size(W)`, then `h` rows of `w` image codes each closed by end-of-line,
then `end`. Each row of a batch keeps a few integers (mode, column and row inside the grid, grid shape,
requested size); the allowed tokens of its next step are one row of a small `[5, V]` mask table, picked by
index. No step looks at the vocabulary in Python.
"""

from dataclasses import dataclass
from enum import IntEnum

import torch

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.unirep import block_length, latent_grid
from lumina_mgpt.vocab import TokenLayout


class Mode(IntEnum):
    """Where a row is: free text, the two size tokens, inside the grid, or finished."""

    TEXT = 0
    SIZE_H = 1
    SIZE_W = 2
    GRID = 3
    DONE = 4


class Kind(IntEnum):
    """Rows of the mask table: what the next token may be."""

    TEXT = 0  # anything but image codes, end-of-line, image end and size tokens
    SIZE = 1  # a size token
    CODE = 2  # an image code
    EOL = 3  # end-of-line only
    END = 4  # image end only


# Indexed by Mode: the kind of the next token outside grid ends, and the mode after one more token.
_KIND_OF_MODE = (Kind.TEXT, Kind.SIZE, Kind.SIZE, Kind.CODE, Kind.TEXT)
_MODE_AFTER = (Mode.TEXT, Mode.SIZE_W, Mode.GRID, Mode.GRID, Mode.DONE)


@dataclass
class BlockState:
    """Per-row decoding state (all `LongTensor[B]`). Inside a grid of `rows x cols` latents the next token
    is at (`row`, `col`), `col == cols` being the end-of-line; `want_h/want_w` are requested sizes in size
    units (0 = let the model sample the size token)."""

    mode: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    want_h: torch.Tensor
    want_w: torch.Tensor

    @property
    def in_image(self) -> torch.Tensor:
        return (self.mode >= Mode.SIZE_H.value) & (self.mode <= Mode.GRID.value)


class UniRepGrammar:
    """The mask table and the state machine for one token layout, built once."""

    def __init__(
        self, layout: TokenLayout, device: torch.device | str = "cpu", vocab_size: int | None = None
    ) -> None:
        """`vocab_size`: the model's, if larger than the tokenizer's (ids past the tokenizer are never allowed)."""
        self.layout = layout
        vocab = vocab_size or layout.vocab_size
        if vocab < layout.vocab_size:
            raise LuminaError(
                f"the model's vocabulary of {vocab} is smaller than the tokenizer's {layout.vocab_size}"
            )
        sizes, codes = layout.size_token_ids[1:], layout.image_token_ids.long()
        allowed = torch.zeros(len(Kind), vocab, dtype=torch.bool)
        allowed[Kind.TEXT, : layout.vocab_size] = True
        allowed[Kind.TEXT, torch.cat([codes, sizes, torch.tensor([layout.eol_id, layout.image_end_id])])] = (
            False
        )
        allowed[Kind.SIZE, sizes] = True
        allowed[Kind.CODE, codes] = True
        allowed[Kind.EOL, layout.eol_id] = True
        allowed[Kind.END, layout.image_end_id] = True
        self.masks = torch.zeros(len(Kind), vocab).masked_fill(~allowed, float("-inf")).to(device)
        self.size_ids = sizes.to(device)  # id of the size token for n = 1, 2, ...
        self.latents_of = (layout.size_of_id.clamp(min=0) * layout.grid_per_unit).to(device)  # per size id
        self.kind_of_mode = torch.tensor(_KIND_OF_MODE, device=device)
        self.mode_after = torch.tensor(_MODE_AFTER, device=device)

    def longest_grid(self, sizes: list[tuple[int, int] | None]) -> int:
        """Tokens (codes, end-of-lines and the end) of the longest grid an image of these requested `(W, H)`
        sizes can have; None: any size the layout's size tokens allow."""
        side = self.layout.max_size_units * self.layout.size_unit_px
        header = 3  # image start and the two size tokens
        return max(block_length(w, h, self.layout) - header for w, h in (s or (side, side) for s in sizes))

    def start(self, prompts: list[list[int]], sizes: list[tuple[int, int] | None]) -> BlockState:
        """The state after each prompt: inside an image if the prompt ends in an open image block (an
        assistant turn that starts with an image prefix). `sizes` are requested `(W, H)` in pixels or None."""
        layout, unit = self.layout, self.layout.size_unit_px
        rows = []
        for prompt, size in zip(prompts, sizes, strict=True):
            width, height = size if size is not None else (0, 0)
            if size is not None:
                latent_grid(width, height, layout)  # raises unless the sides are multiples of the unit
                layout.size_token_id(max(width, height) // unit)  # raises if no size token is that large
            mode, row, col, h, w = Mode.TEXT, 0, 0, 0, 0
            start = open_block_start(prompt, layout)
            if start is not None:
                header = prompt[start + 1 : start + 3]
                latents = [int(self.latents_of[t]) for t in header]
                if any(n < 1 for n in latents):
                    raise LuminaError(f"the image prefix at token {start} has an invalid size token")
                mode = (Mode.SIZE_H, Mode.SIZE_W, Mode.GRID)[len(header)]
                h, w = [*latents, 0, 0][:2]
                if mode == Mode.GRID:
                    row, col = divmod(len(prompt) - start - 3, w + 1)
            rows.append((mode, row, col, h, w, height // unit, width // unit))
        columns = torch.tensor(rows, dtype=torch.long, device=self.masks.device).T
        return BlockState(*(c.contiguous() for c in columns))

    def next_kind(self, state: BlockState) -> tuple[torch.Tensor, torch.Tensor]:
        """`(kind[B], forced[B])`: the mask row of each row's next token, and a forced token id (-1 = none;
        the requested size tokens)."""
        in_grid = state.mode == Mode.GRID.value
        kind = self.kind_of_mode[state.mode]
        kind = torch.where(in_grid & (state.col == state.cols), Kind.EOL, kind)
        kind = torch.where(in_grid & (state.row == state.rows), Kind.END, kind)
        want = torch.where(state.mode == Mode.SIZE_H.value, state.want_h, state.want_w)
        forced = torch.where(
            (kind == Kind.SIZE.value) & (want > 0), self.size_ids[(want - 1).clamp(min=0)], -1
        )
        return kind, forced

    def advance(self, state: BlockState, token: torch.Tensor, kind: torch.Tensor) -> None:
        """Move every row past its new `token`, drawn as `kind`, in place (DONE rows stay DONE)."""
        mode = state.mode.clone()
        in_grid = mode == Mode.GRID.value
        latents = self.latents_of[token]
        state.rows.copy_(torch.where(mode == Mode.SIZE_H.value, latents, state.rows))
        state.cols.copy_(torch.where(mode == Mode.SIZE_W.value, latents, state.cols))
        eol = kind == Kind.EOL.value
        state.col.copy_(torch.where(in_grid & ~eol, state.col + 1, 0))
        state.row.copy_(torch.where(in_grid, state.row + eol.long(), 0))
        after = torch.where(
            (mode == Mode.TEXT.value) & (token == self.layout.image_start_id),
            Mode.SIZE_H,
            self.mode_after[mode],
        )
        state.mode.copy_(torch.where(kind == Kind.END.value, Mode.TEXT, after))


def open_block_start(prompt: list[int], layout: TokenLayout) -> int | None:
    """Index of an image start in `prompt` whose block is still open at the end, else None."""
    for index in range(len(prompt) - 1, -1, -1):
        if prompt[index] == layout.image_end_id:
            return None
        if prompt[index] == layout.image_start_id:
            return index
    return None
