"""Uni-Rep: a grid of image codes as a token block; aspect-ratio buckets; the resolution-aware prompt.

A W x H image (multiples of 32 px) becomes

    <start> <size H/32> <size W/32>  row_0 <eol>  row_1 <eol> ... row_{h-1} <eol>  <end>

with h x w latents (h = H / latent_factor), height first, and every row closed by end-of-line:
(H/f)·(W/f + 1) + 4 tokens.
"""

import numbers
import re
from typing import NamedTuple

import numpy as np
import torch

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.vocab import TokenLayout

_T2I_TEMPLATE = "Generate an image of {W}x{H} according to the following prompt:\n{description}"
_T2I_PATTERN = re.compile(
    r"Generate an image(?: of (\d+)x(\d+))? according to the following prompt:\n(.*)", re.DOTALL
)


def latent_grid(width: int, height: int, layout: TokenLayout) -> tuple[int, int]:
    """(rows, columns) of the code grid of a width x height image; sides must be multiples of the size unit."""
    problem = _sides_problem(width, height, layout.size_unit_px)
    if problem:
        raise LuminaError(f"image size {width}x{height}: {problem}")
    return height // layout.latent_factor, width // layout.latent_factor


def block_length(width: int, height: int, layout: TokenLayout) -> int:
    """Number of tokens in the Uni-Rep block of a width x height image: (H/f)·(W/f + 1) + 4."""
    rows, columns = latent_grid(width, height, layout)
    return rows * (columns + 1) + 4


def image_block_header(width: int, height: int, layout: TokenLayout) -> torch.Tensor:
    """The first three tokens of a block: image start, height size token, width size token."""
    latent_grid(width, height, layout)
    unit = layout.size_unit_px
    return torch.tensor(
        [layout.image_start_id, layout.size_token_id(height // unit), layout.size_token_id(width // unit)]
    )


def encode_image_block(codes: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """Codes [h, w] -> a closed block LongTensor[n]; codes [B, h, w] -> LongTensor[B, n]."""
    if codes.dim() not in (2, 3):
        raise LuminaError(f"image codes must have shape [h, w] or [B, h, w], got {list(codes.shape)}")
    if codes.shape[-2] % layout.grid_per_unit:
        raise LuminaError(
            f"code grid has {codes.shape[-2]} rows, not a multiple of {layout.grid_per_unit} "
            f"latents per {layout.size_unit_px} px"
        )
    rows = _rows(codes, layout)
    height, width = (side * layout.latent_factor for side in codes.shape[-2:])
    header = image_block_header(width, height, layout).to(codes.device)
    end = header.new_tensor([layout.image_end_id])
    if codes.dim() == 2:
        return torch.cat([header, rows, end])
    batch = codes.shape[0]
    return torch.cat([header.expand(batch, 3), rows, end.expand(batch, 1)], dim=1)


def image_block_prefix(codes: torch.Tensor, height: int, layout: TokenLayout) -> torch.Tensor:
    """An open block for a canvas `height` px tall whose first rows are `codes` [h, w] (v2 image-to-image).

    Header for the full canvas, then the given rows with their end-of-line tokens, and no image end: the
    model continues with the remaining rows.
    """
    if codes.dim() != 2:
        raise LuminaError(f"prefix codes must have shape [h, w], got {list(codes.shape)}")
    rows = _rows(codes, layout)
    width = codes.shape[1] * layout.latent_factor
    canvas_rows, _ = latent_grid(width, height, layout)
    if codes.shape[0] > canvas_rows:
        raise LuminaError(f"prefix has {codes.shape[0]} rows but a {height} px canvas has only {canvas_rows}")
    return torch.cat([image_block_header(width, height, layout).to(codes.device), rows])


def prefix_height(height: int, layout: TokenLayout) -> int:
    """Pixel height of the given upper half of a `height` px canvas (v2 image-to-image): half the canvas in
    whole grid rows (rounded down, at least one), e.g. 48 px of a 96 px canvas at 8 px per row."""
    canvas_rows, _ = latent_grid(layout.size_unit_px, height, layout)
    return max(1, canvas_rows // 2) * layout.latent_factor


def decode_image_block(ids: torch.Tensor | list[int], layout: TokenLayout) -> torch.Tensor:
    """A closed Uni-Rep block -> codes LongTensor[h, w]; raises LuminaError saying what is wrong and where.

    Positions count from the block's first token, rows from 0.
    """
    ids = _as_ids(ids)
    count = ids.numel()
    if count < 4:
        raise LuminaError(f"image block has only {count} tokens")
    if ids[0] != layout.image_start_id:
        raise LuminaError(
            f"image block starts with token {int(ids[0])}, not image start {layout.image_start_id}"
        )
    units = layout.size_of_id.to(ids.device)[_in_vocab(ids[1:3], layout)]
    for position, side in ((1, "height"), (2, "width")):
        if units[position - 1] < 0:
            raise LuminaError(
                f"token {int(ids[position])} at position {position} is not a size token ({side})"
            )
    if ids[-1] != layout.image_end_id:
        raise LuminaError(
            f"image block is not closed: last token {int(ids[-1])} is not image end {layout.image_end_id}"
        )
    rows, columns = (int(n) * layout.grid_per_unit for n in units)
    grid = ids[3:-1]
    is_eol = grid == layout.eol_id
    codes = layout.code_of_id.to(ids.device)[_in_vocab(grid, layout)]
    stray = torch.nonzero((codes < 0) & ~is_eol).flatten()
    if stray.numel():
        at = int(stray[0])
        raise LuminaError(
            f"token {int(grid[at])} at position {at + 3} (row {int(is_eol[:at].sum())}) is not an "
            "image code or end-of-line"
        )
    eol_at = torch.nonzero(is_eol).flatten()
    if grid.numel() == 0 or not is_eol[-1]:
        raise LuminaError(f"row {eol_at.numel()} is not closed by end-of-line")
    lengths = torch.diff(eol_at, prepend=eol_at.new_tensor([-1])) - 1
    wrong = torch.nonzero(lengths != columns).flatten()
    if wrong.numel():
        row = int(wrong[0])
        raise LuminaError(
            f"row {row} has {int(lengths[row])} codes, expected {columns} "
            f"(width token says {columns * layout.latent_factor} px)"
        )
    if lengths.numel() != rows:
        raise LuminaError(
            f"image block has {lengths.numel()} rows, expected {rows} "
            f"(height token says {rows * layout.latent_factor} px)"
        )
    return codes[~is_eol].view(rows, columns)


def find_image_blocks(ids: torch.Tensor | list[int], layout: TokenLayout) -> list[tuple[int, int]]:
    """Closed image blocks in a token stream as slices (start, end): `ids[start:end]` is one block.

    A start inside an open block restarts it; an end with no open block and an unclosed final block are
    ignored. Only the start/end positions are visited in Python.
    """
    ids = _as_ids(ids)
    marks = torch.nonzero((ids == layout.image_start_id) | (ids == layout.image_end_id)).flatten()
    blocks, open_at = [], None
    for position, token in zip(marks.tolist(), ids[marks].tolist(), strict=True):
        if token == layout.image_start_id:
            open_at = position
        elif open_at is not None:
            blocks.append((open_at, position + 1))
            open_at = None
    return blocks


MAX_BUCKET_RATIO = 4.0  # the releases' longest side over shortest


def buckets(area_side_px: int = 512, unit: int = 32, max_ratio: float | None = None) -> list[tuple[int, int]]:
    """Canvas sizes (W, H) of about area_side_px² pixels: the releases' staircase of (w, h) units.

    Starting from (N, 1) units (N = (area_side_px / unit)²), keep (w, h) when the aspect is at most
    max_ratio (None: the releases' 4); grow h while (h + 1)·w ≤ N, else shrink w. 512 gives 49 sizes, 768 gives
    73, 1024 gives 97.
    """
    max_ratio = MAX_BUCKET_RATIO if max_ratio is None else max_ratio
    if area_side_px <= 0 or unit <= 0 or area_side_px % unit:
        raise LuminaError(f"bucket side {area_side_px} px is not a positive multiple of the unit {unit} px")
    if max_ratio < 1:
        raise LuminaError(f"bucket max_ratio must be at least 1, got {max_ratio}")
    budget = (area_side_px // unit) ** 2
    sizes, w, h = [], budget, 1
    while w > 0:
        if max(w, h) / min(w, h) <= max_ratio:
            sizes.append((w * unit, h * unit))
        if (h + 1) * w <= budget:
            h += 1
        else:
            w -= 1
    return sizes


def nearest_bucket(width: int, height: int, sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect best matches width x height, by the releases' rule.

    Score min(W/w, H/h) / max(W/w, H/h), highest wins; ties go to the larger (W, H).
    """
    if width <= 0 or height <= 0:
        raise LuminaError(f"image size {width}x{height} must be positive")
    if not sizes:
        raise LuminaError("no buckets to choose from")

    def score(size: tuple[int, int]) -> tuple[float, tuple[int, int]]:
        sx, sy = size[0] / width, size[1] / height
        return min(sx, sy) / max(sx, sy), size

    return max(sizes, key=score)


_SIZE_TEXT = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")


def parse_size(text: str, what: str = "size") -> tuple[int, int]:
    """`(width, height)` of "WxH" in pixels, e.g. "768x512": ASCII digits, nothing before, between or after."""
    match = _SIZE_TEXT.fullmatch(text.lower())
    if match is None:
        raise LuminaError(f"{what} {text!r} is not 'WxH' in pixels with ASCII digits (e.g. 768x512)")
    return int(match[1]), int(match[2])


def check_size(
    width: int, height: int, layout: TokenLayout, max_positions: int, prompt_tokens: int = 0
) -> None:
    """Raise LuminaError, listing valid sizes nearby, unless a model of `layout` holding `max_positions`
    tokens can draw a `width x height` image after a prompt of `prompt_tokens` tokens: the one check of a
    requested size (the pipeline, CLI and server call it)."""
    if not all(isinstance(side, numbers.Integral) for side in (width, height)):
        raise LuminaError(f"width and height must be whole numbers of pixels, got {width!r} and {height!r}")
    problem = size_problem(width, height, layout, max_positions, prompt_tokens)
    if problem:
        nearby = [f"{w}x{h}" for w, h in nearby_sizes(width, height, layout, max_positions, prompt_tokens)]
        raise LuminaError(
            f"cannot generate {width}x{height}: {problem}; valid sizes nearby: {', '.join(nearby) or 'none'}"
        )


def size_problem(
    width: int, height: int, layout: TokenLayout, max_positions: int, prompt_tokens: int = 0
) -> str | None:
    """Why a `width x height` image cannot be drawn, or None."""
    unit = layout.size_unit_px
    problem = _sides_problem(width, height, unit)
    if problem:
        return problem
    if max(width, height) > unit * layout.max_size_units:
        return f"sides are limited to {unit * layout.max_size_units} px (no larger size token)"
    needed = prompt_tokens + block_length(width, height, layout)
    if needed > max_positions:
        return f"prompt and image need {needed} tokens, the model holds {max_positions}"
    return None


def _sides_problem(width: int, height: int, unit: int) -> str | None:
    if width <= 0 or height <= 0 or width % unit or height % unit:
        return f"each side must be a positive multiple of {unit} px"
    return None


def nearby_sizes(
    width: int, height: int, layout: TokenLayout, max_positions: int, prompt_tokens: int = 0
) -> list[tuple[int, int]]:
    """Up to four valid sizes around `width x height`, closest first: sides within three units of the
    request, and the request's aspect ratio at the largest scale that fits."""
    unit = layout.size_unit_px

    def valid(size: tuple[int, int]) -> bool:
        return size_problem(*size, layout, max_positions, prompt_tokens) is None

    w0, h0 = (max(unit, round(side / unit) * unit) for side in (width, height))
    candidates = {(w0 + i * unit, h0 + j * unit) for i in range(-3, 4) for j in range(-3, 4)}
    scaled = (
        (max(unit, round(width * f / unit) * unit), max(unit, round(height * f / unit) * unit))
        for f in np.linspace(1.0, 0.0, 101)[:-1]
    )
    candidates.add(next((size for size in scaled if valid(size)), (w0, h0)))
    return sorted(
        (s for s in candidates if valid(s)), key=lambda s: (abs(s[0] - width) + abs(s[1] - height), s)
    )[:4]


def t2i_prompt(description: str, width: int, height: int) -> str:
    """The resolution-aware text-to-image prompt of the paper."""
    return _T2I_TEMPLATE.format(W=width, H=height, description=description)


class T2IPrompt(NamedTuple):
    description: str
    width: int | None  # None for the size-less training variant
    height: int | None


def parse_t2i_prompt(text: str) -> T2IPrompt | None:
    """Inverse of `t2i_prompt` (also reads the variant without "of WxH"); None when `text` is not one."""
    match = _T2I_PATTERN.fullmatch(text)
    if match is None:
        return None
    width, height, description = match.groups()
    if width is None:
        return T2IPrompt(description, None, None)
    return T2IPrompt(description, int(width), int(height))


def _rows(codes: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """Image ids of codes [..., h, w] with an end-of-line after every row, flattened to [..., h·(w+1)]."""
    rows, columns = codes.shape[-2:]
    if rows == 0 or columns == 0 or columns % layout.grid_per_unit:
        raise LuminaError(
            f"code grid of {rows}x{columns} (rows x columns) needs rows and a multiple of "
            f"{layout.grid_per_unit} columns ({layout.grid_per_unit} latents per {layout.size_unit_px} px)"
        )
    ids = layout.image_ids(codes)
    eol = ids.new_full((*ids.shape[:-1], 1), layout.eol_id)
    return torch.cat([ids, eol], dim=-1).flatten(-2)


def _as_ids(ids: torch.Tensor | list[int]) -> torch.Tensor:
    ids = torch.as_tensor(ids)
    if ids.dim() == 1 and ids.numel() == 0:
        return ids.long()
    if ids.dim() != 1 or ids.is_floating_point() or ids.is_complex():
        raise LuminaError(
            f"token ids must be a 1-D integer sequence, got shape {list(ids.shape)} of {ids.dtype}"
        )
    return ids.long()


def _in_vocab(ids: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """ids, after checking they lie inside the layout's vocabulary."""
    if ids.numel() and (ids.min() < 0 or ids.max() >= layout.vocab_size):
        bad = int(ids[(ids < 0) | (ids >= layout.vocab_size)][0])
        raise LuminaError(f"token {bad} lies outside the vocabulary of {layout.vocab_size}")
    return ids
