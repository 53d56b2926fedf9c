"""Special-token layout of a checkpoint: image start/end, end-of-line, size tokens, image code <-> token id.

Every release names its special tokens the same way (`<racm3:break>`, `<eoss>`, `<reserved08799>`,
`<reserved0{8800+n}>`, `<reserved08706>`) but puts them at different ids, so a `TokenLayout` is plain data:
ids resolved once, plus dense lookup tables in both directions (never a scan of the vocabulary per call).
"""

import functools
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from lumina_mgpt.errors import LuminaError

if TYPE_CHECKING:
    from lumina_mgpt.text import TextTokenizer

IMAGE_START = "<racm3:break>"
IMAGE_END = "<eoss>"
END_OF_LINE = "<reserved08799>"
TURN_SEP = "<reserved08706>"
MAX_SIZE_UNITS = 128  # size tokens n = 1..128, i.e. sides up to 4096 px
SIZE_UNIT_PX = 32  # pixels of one size unit
TOKENIZER_FILE_NAMES = ("tokenizer.json", "text_tokenizer.json")

Kind = Literal["v1", "v2", "ours"]
_V1_IMAGE_PREFIX = "IMGIMG"
_V1_LETTERS = "ABCDEFGHIJ"  # letter i stands for digit i in the v1 image-token names
_V2_IMAGE_PREFIX = "<MOVQGAN"
_V2_FIRST_IMAGE_ID = 155000
_V2_CODEBOOK = 16384
_DEFAULT_BOS = {"v1": "<s>", "v2": "<|endoftext|>", "ours": "<s>"}


def size_token_name(n: int) -> str:
    """Name of the size token for a side of n * 32 pixels: `<reserved0{8800+n}>`."""
    return f"<reserved{8800 + n:05d}>"


def v1_image_token_name(code: int) -> str:
    """Name of a v1 (Chameleon) image token: `IMGIMG`, the code's digits as letters A-J, one trailing `Z`."""
    return _V1_IMAGE_PREFIX + str(code).translate(str.maketrans("0123456789", _V1_LETTERS)) + "Z"


def ours_image_token_name(code: int) -> str:
    """Name of an image token in the project's own tokenizers: `<img{code}>`."""
    return f"<img{code}>"


@dataclass(frozen=True, eq=False)
class TokenLayout:
    """Where the special and image tokens of one checkpoint live. Tensors are CPU (see `to`), read-only.

    `image_token_ids[code]` is the token id of an image code; `size_token_ids[n]` the id of the size token
    for n * `size_unit_px` pixels (-1 at n = 0). `code_of_id` / `size_of_id` are the inverse tables over
    the whole vocabulary, -1 where an id is not an image / size token.
    """

    name: str
    vocab_size: int
    bos_id: int
    turn_sep_id: int
    stop_ids: tuple[int, ...]
    image_start_id: int
    image_end_id: int
    eol_id: int
    latent_factor: int
    image_token_ids: torch.Tensor = field(repr=False)
    size_token_ids: torch.Tensor = field(repr=False)
    size_unit_px: int = SIZE_UNIT_PX
    code_of_id: torch.Tensor = field(init=False, repr=False)
    size_of_id: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        image_ids, size_ids = self.image_token_ids.long(), self.size_token_ids.long()
        if self.size_unit_px % self.latent_factor:
            raise LuminaError(
                f"layout {self.name}: size unit {self.size_unit_px} px is not a multiple of "
                f"the latent factor {self.latent_factor}"
            )
        if size_ids.numel() < 2 or size_ids[0] != -1 or (size_ids[1:] < 0).any():
            raise LuminaError(f"layout {self.name}: size tokens must exist for n = 1..max and not for n = 0")
        specials = torch.tensor(
            [
                self.bos_id,
                self.turn_sep_id,
                *self.stop_ids,
                self.image_start_id,
                self.image_end_id,
                self.eol_id,
            ]
        )
        every = torch.cat([image_ids, size_ids[1:], specials])
        if every.min() < 0 or every.max() >= self.vocab_size:
            raise LuminaError(
                f"layout {self.name}: a token id lies outside the vocabulary of {self.vocab_size}"
            )
        structural = torch.cat([image_ids, size_ids[1:], specials[-3:]])
        if torch.unique(structural).numel() != structural.numel():
            raise LuminaError(f"layout {self.name}: image, size, start, end and end-of-line ids overlap")
        code_of_id = torch.full((self.vocab_size,), -1, dtype=torch.long, device=image_ids.device)
        code_of_id[image_ids] = torch.arange(image_ids.numel(), device=image_ids.device)
        size_of_id = torch.full((self.vocab_size,), -1, dtype=torch.long, device=image_ids.device)
        size_of_id[size_ids[1:]] = torch.arange(1, size_ids.numel(), device=image_ids.device)
        for name, value in [
            ("image_token_ids", image_ids),
            ("size_token_ids", size_ids),
            ("code_of_id", code_of_id),
            ("size_of_id", size_of_id),
        ]:
            object.__setattr__(self, name, value)

    @property
    def codebook_size(self) -> int:
        return self.image_token_ids.numel()

    @property
    def max_size_units(self) -> int:
        return self.size_token_ids.numel() - 1

    @property
    def grid_per_unit(self) -> int:
        """Latent rows (or columns) per size unit: 2 for v1, 4 for v2 and ours."""
        return self.size_unit_px // self.latent_factor

    def size_token_id(self, n: int) -> int:
        """Token id meaning a side of n size units (n * 32 px)."""
        if not 1 <= n <= self.max_size_units:
            raise LuminaError(
                f"size of {n} units ({n * self.size_unit_px} px) is outside 1..{self.max_size_units} "
                f"units of layout {self.name}"
            )
        return int(self.size_token_ids[n])

    def size_of_token(self, token_id: int) -> int:
        """Number of size units a size token stands for."""
        n = int(self.size_of_id[self._checked_ids(token_id)])
        if n < 0:
            raise LuminaError(f"token {token_id} is not a size token of layout {self.name}")
        return n

    def code_of(self, ids: torch.Tensor | int) -> torch.Tensor:
        """Image codes of token ids (any shape) by dense lookup; -1 where an id is not an image token."""
        return self.code_of_id.to(_device_of(ids))[self._checked_ids(ids)]

    def image_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """Token ids of image codes (any shape) by dense lookup."""
        codes = torch.as_tensor(codes)
        if codes.is_floating_point() or codes.is_complex():
            raise LuminaError(f"image codes must be integers, got {codes.dtype}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise LuminaError(
                f"image codes must lie in 0..{self.codebook_size - 1} for layout {self.name}, "
                f"got {int(codes.min())}..{int(codes.max())}"
            )
        return self.image_token_ids.to(codes.device)[codes.long()]

    def to(self, device: torch.device | str) -> "TokenLayout":
        """The same layout with its tables on `device`."""
        return replace(
            self,
            image_token_ids=self.image_token_ids.to(device),
            size_token_ids=self.size_token_ids.to(device),
        )

    def _checked_ids(self, ids: torch.Tensor | int) -> torch.Tensor:
        ids = torch.as_tensor(ids)
        if ids.is_floating_point() or ids.is_complex():
            raise LuminaError(f"token ids must be integers, got {ids.dtype}")
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise LuminaError(
                f"token ids must lie in 0..{self.vocab_size - 1} for layout {self.name}, "
                f"got {int(ids.min())}..{int(ids.max())}"
            )
        return ids.long()

    def _key(self) -> tuple:
        return (
            self.name,
            self.vocab_size,
            self.bos_id,
            self.turn_sep_id,
            self.stop_ids,
            self.image_start_id,
            self.image_end_id,
            self.eol_id,
            self.latent_factor,
            self.size_unit_px,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TokenLayout):
            return NotImplemented
        return (
            self._key() == other._key()
            and torch.equal(self.image_token_ids.cpu(), other.image_token_ids.cpu())
            and torch.equal(self.size_token_ids.cpu(), other.size_token_ids.cpu())
        )

    def __hash__(self) -> int:
        return hash((*self._key(), self.codebook_size, self.max_size_units))

    @classmethod
    def v1(cls) -> "TokenLayout":
        """Lumina-mGPT v1 (Chameleon vocabulary of 65,536): REFERENCE.md's ids.

        Image code k is token 4 + k: the monotonic reading of the `IMGIMG` names. `from_tokenizer(..., "v1")`
        builds the table from the names themselves; use it when the tokenizer file is at hand.
        """
        return _release_layout("v1")

    @classmethod
    def v2(cls) -> "TokenLayout":
        """Lumina-mGPT 2.0 (vocabulary of 171,385): REFERENCE.md's ids.

        Known from the release code: start 151665, end 151666 (also the stop), end-of-line 151670, image code
        k = 155000 + k. *Inferred, not in any published file* (the release looks them up by name, so load
        the real tokenizer with `from_tokenizer(..., "v2")` when you have it): size tokens continue the
        `<reserved08796..08799>` run at 151667..151670, so `<reserved0{8800+n}>` = 151671 + n; the turn
        separator is the one id left after the image codes, 171384; BOS is the Qwen-style EOS
        `<|endoftext|>` = 151643 (the release falls back to EOS when the tokenizer has no BOS).
        """
        return _release_layout("v2")

    @classmethod
    def from_tokenizer(cls, path: str | Path, kind: Kind) -> "TokenLayout":
        """Resolve a layout by token NAME from a `tokenizer.json` (or a folder holding one); cached.

        kind: "v1" (image tokens from the `IMGIMG` names), "v2" (image code k = 155000 + k, names
        `<MOVQGAN…>`) or "ours" (image codes `<img{k}>`, contiguous). BOS comes from a sibling
        `tokenizer_config.json` (its bos_token, else its eos_token, as the releases do), else from the
        kind's default name (`<s>`; v2: `<|endoftext|>`).
        """
        if kind not in _DEFAULT_BOS:
            raise LuminaError(f"unknown layout kind {kind!r}; expected one of {', '.join(_DEFAULT_BOS)}")
        file = find_tokenizer_file(path)
        config = file.parent / "tokenizer_config.json"
        config_mtime = config.stat().st_mtime_ns if config.is_file() else None
        return _layout_from_file(str(file.resolve()), file.stat().st_mtime_ns, config_mtime, kind)


def find_tokenizer_file(path: str | Path) -> Path:
    """The tokenizer file at `path`: the path itself, or `tokenizer.json` / `text_tokenizer.json` inside it."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        for name in TOKENIZER_FILE_NAMES:
            if (path / name).is_file():
                return path / name
        raise LuminaError(f"{path} holds no tokenizer file (looked for {', '.join(TOKENIZER_FILE_NAMES)})")
    raise LuminaError(f"tokenizer file {path} does not exist")


@functools.cache
def _release_layout(kind: Kind) -> TokenLayout:
    sizes = torch.arange(MAX_SIZE_UNITS + 1)
    if kind == "v1":  # <reservedNNNNN> is id NNNNN + 4 in the Chameleon vocabulary
        return TokenLayout(
            name="v1",
            vocab_size=65536,
            bos_id=0,
            turn_sep_id=8710,
            stop_ids=(8710,),
            image_start_id=8197,
            image_end_id=8196,
            eol_id=8803,
            latent_factor=16,
            image_token_ids=torch.arange(8192) + 4,
            size_token_ids=torch.where(sizes > 0, sizes + 8804, -1),
        )
    return TokenLayout(
        name="v2",
        vocab_size=171385,
        bos_id=151643,
        turn_sep_id=171384,
        stop_ids=(151666,),
        image_start_id=151665,
        image_end_id=151666,
        eol_id=151670,
        latent_factor=8,
        image_token_ids=torch.arange(_V2_CODEBOOK) + _V2_FIRST_IMAGE_ID,
        size_token_ids=torch.where(sizes > 0, sizes + 151671, -1),
    )


@functools.cache
def _layout_from_file(file: str, mtime_ns: int, config_mtime_ns: int | None, kind: Kind) -> TokenLayout:
    del mtime_ns, config_mtime_ns  # cache keys only: an edited file resolves afresh
    ids = _read_vocab(Path(file))

    def lookup(name: str) -> int:
        if name not in ids:
            raise LuminaError(f"token {name} is missing from {file}")
        return ids[name]

    sizes = [-1]
    while len(sizes) <= MAX_SIZE_UNITS and size_token_name(len(sizes)) in ids:
        sizes.append(ids[size_token_name(len(sizes))])
    if len(sizes) == 1:
        lookup(size_token_name(1))
    if kind == "v1":
        image_ids = _v1_image_ids(ids, file)
    elif kind == "v2":
        image_ids = _v2_image_ids(ids, file)
    else:
        image_ids = []
        while ours_image_token_name(len(image_ids)) in ids:
            image_ids.append(ids[ours_image_token_name(len(image_ids))])
        if not image_ids:
            lookup(ours_image_token_name(0))
    if kind != "v2" and sorted(image_ids) != list(range(min(image_ids), min(image_ids) + len(image_ids))):
        raise LuminaError(f"image tokens of {file} do not occupy one contiguous range of ids")
    turn_sep, image_end = lookup(TURN_SEP), lookup(IMAGE_END)
    return TokenLayout(
        name=kind,
        vocab_size=max(ids.values()) + 1,
        bos_id=lookup(_bos_name(Path(file), kind)),
        turn_sep_id=turn_sep,
        stop_ids=(image_end,) if kind == "v2" else (turn_sep,),
        image_start_id=lookup(IMAGE_START),
        image_end_id=image_end,
        eol_id=lookup(END_OF_LINE),
        latent_factor=16 if kind == "v1" else 8,
        image_token_ids=torch.tensor(image_ids),
        size_token_ids=torch.tensor(sizes),
    )


def _read_vocab(file: Path) -> dict[str, int]:
    """Token name -> id over `model.vocab` and `added_tokens` of a tokenizers JSON file."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        vocab = data["model"]["vocab"]
        ids = dict(vocab) if isinstance(vocab, dict) else {piece[0]: i for i, piece in enumerate(vocab)}
        ids.update({token["content"]: token["id"] for token in data.get("added_tokens") or []})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, IndexError) as error:
        raise LuminaError(f"{file} is not a readable tokenizers JSON file ({type(error).__name__})") from None
    if not ids:
        raise LuminaError(f"{file} has an empty vocabulary")
    return ids


def _v1_image_ids(ids: dict[str, int], file: str) -> list[int]:
    """Token id of each v1 image code, read from the `IMGIMG…` names (letters A-J are the code's digits)."""
    table: dict[int, int] = {}
    for name, token_id in ids.items():
        if name.startswith(_V1_IMAGE_PREFIX):
            digits = name[len(_V1_IMAGE_PREFIX) : -1]
            if not digits or any(c not in _V1_LETTERS for c in digits):
                raise LuminaError(f"image token {name} in {file} does not spell a code with letters A-J")
            table[int(digits.translate(str.maketrans(_V1_LETTERS, "0123456789")))] = token_id
    if sorted(table) != list(range(len(table))) or not table:
        raise LuminaError(f"the IMGIMG tokens of {file} do not cover codes 0..n-1 exactly once")
    return [table[code] for code in range(len(table))]


def _v2_image_ids(ids: dict[str, int], file: str) -> list[int]:
    """v2 image code k is token 155000 + k; check the names there are MoVQGAN tokens."""
    names = {token_id: name for name, token_id in ids.items()}
    image_ids = list(range(_V2_FIRST_IMAGE_ID, _V2_FIRST_IMAGE_ID + _V2_CODEBOOK))
    for token_id in image_ids:
        if not names.get(token_id, "").startswith(_V2_IMAGE_PREFIX):
            raise LuminaError(
                f"token {token_id} of {file} is {names.get(token_id)!r}, not a {_V2_IMAGE_PREFIX}… "
                "image token"
            )
    return image_ids


def special_token_names(folder: Path) -> dict[str, str]:
    """bos_token / eos_token / pad_token names from `folder/tokenizer_config.json`; {} when there is none."""
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return {}
    try:
        settings = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise LuminaError(f"{config} is not valid JSON") from None
    names = {}
    for key in ("bos_token", "eos_token", "pad_token"):
        token = settings.get(key)
        token = token.get("content") if isinstance(token, dict) else token
        if isinstance(token, str):
            names[key] = token
    return names


def _bos_name(file: Path, kind: Kind) -> str:
    names = special_token_names(file.parent)
    return names.get("bos_token") or names.get("eos_token") or _DEFAULT_BOS[kind]


def _device_of(ids: torch.Tensor | int) -> torch.device:
    return ids.device if isinstance(ids, torch.Tensor) else torch.device("cpu")


def detect_kind(tokenizer: "TextTokenizer") -> str:
    """ "ours", "v1" or "v2", from the names of the tokenizer's image tokens."""
    raw = tokenizer.tokenizer
    if raw.token_to_id(ours_image_token_name(0)) is not None:
        return "ours"
    if raw.token_to_id(v1_image_token_name(0)) is not None:
        return "v1"
    if (raw.id_to_token(155000) or "").startswith("<MOVQGAN"):
        return "v2"
    raise LuminaError(
        "the text tokenizer has no image tokens (<img0>, IMGIMG… or <MOVQGAN…>): not a Lumina-mGPT tokenizer"
    )
