"""Text tokenizer: a thin wrapper of `tokenizers.Tokenizer`, and the byte-level BPE of the project's own models."""

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.vocab import (
    END_OF_LINE,
    IMAGE_END,
    IMAGE_START,
    MAX_SIZE_UNITS,
    TURN_SEP,
    find_tokenizer_file,
    ours_image_token_name,
    size_token_name,
    special_token_names,
)

IMAGE_PLACEHOLDER = "<|image|>"
_CONFIG_FILE = "tokenizer_config.json"


class TextTokenizer:
    """Text <-> token ids. `encode` adds no special tokens: BOS and separators are the conversation's job."""

    def __init__(self, tokenizer: Tokenizer, special_tokens: dict[str, str] | None = None) -> None:
        self.tokenizer = tokenizer
        self.special_tokens = dict(special_tokens or {})  # tokenizer_config.json names: bos_token, ...

    @classmethod
    def from_file(cls, path: str | Path) -> "TextTokenizer":
        """Load a tokenizers JSON file; BOS/EOS/PAD names come from a sibling tokenizer_config.json if any."""
        path = Path(path)
        if not path.is_file():
            raise LuminaError(f"tokenizer file {path} does not exist")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as error:  # tokenizers raises a bare Exception for every parse problem
            raise LuminaError(f"{path} is not a readable tokenizers JSON file ({error})") from None
        return cls(tokenizer, special_token_names(path.parent))

    @classmethod
    def from_folder(cls, folder: str | Path) -> "TextTokenizer":
        """Load `tokenizer.json` or the v1 release's `text_tokenizer.json` from a folder."""
        return cls.from_file(find_tokenizer_file(folder))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise LuminaError(f"text to encode must be a str, got {type(text).__name__}")
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise LuminaError(f"token {token} is not in the tokenizer's vocabulary")
        return token_id

    def with_numbers(self, number_tokens: int) -> "TextTokenizer":
        """A copy in which every whole number below `number_tokens` is one token: the numbers it lacks get ids
        after its last one and every existing token keeps its id, so a model of this tokenizer can grow into
        the copy (`ChameleonTransformer.grow_vocabulary`)."""
        tokenizer = Tokenizer.from_str(self.tokenizer.to_str())
        tokenizer.add_tokens(whole_numbers(number_tokens))
        return TextTokenizer(tokenizer, self.special_tokens)

    def save(self, folder: str | Path) -> Path:
        """Write `tokenizer.json` (and `tokenizer_config.json` when special names are known); return the json path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(folder / "tokenizer.json"))
        if self.special_tokens:
            config = {"tokenizer_class": "PreTrainedTokenizerFast", **self.special_tokens}
            (folder / _CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        return folder / "tokenizer.json"


def whole_numbers(number_tokens: int) -> list[str]:
    """The numbers 10 .. `number_tokens` - 1 as text (0-9 are byte tokens already)."""
    return [str(n) for n in range(10, number_tokens)]


def ours_special_tokens(codebook_size: int, max_size_units: int) -> list[str]:
    """Special tokens of the project's own tokenizers, in id order from 0 (image codes contiguous, last)."""
    base = ["<s>", "<pad>", "</s>", IMAGE_PLACEHOLDER, IMAGE_START, IMAGE_END, TURN_SEP, END_OF_LINE]
    sizes = [size_token_name(n) for n in range(1, max_size_units + 1)]
    return base + sizes + [ours_image_token_name(k) for k in range(codebook_size)]


def build_text_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    codebook_size: int,
    max_size_units: int,
    number_tokens: int = 0,
    min_frequency: int = 2,
) -> TextTokenizer:
    """Train a byte-level BPE for the project's own models (kind "ours"); exactly `vocab_size` tokens.

    Ids 0.. hold the special tokens of `ours_special_tokens` (BOS `<s>` = 0), then the 256 byte tokens
    and the learned merges. Every whole number below `number_tokens` is one token, the same one wherever
    it stands (the BPE learns no merges of digits then); a longer number splits into such numbers, longest
    first from the left. If the texts support fewer merges, `<unused{i}>` tokens fill the vocabulary up to
    `vocab_size`, so the model's vocabulary size is what was asked. Byte-level, so every string round-trips exactly.
    """
    if not 1 <= max_size_units <= MAX_SIZE_UNITS:
        raise LuminaError(f"max_size_units must lie in 1..{MAX_SIZE_UNITS}, got {max_size_units}")
    if codebook_size < 1:
        raise LuminaError(f"codebook_size must be positive, got {codebook_size}")
    specials = ours_special_tokens(codebook_size, max_size_units)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    numbers = whole_numbers(number_tokens)
    least = len(specials) + len(alphabet) + len(numbers)
    if vocab_size < least:
        raise LuminaError(
            f"vocab_size {vocab_size} is too small: {len(specials)} special and image tokens, "
            f"{len(alphabet)} byte tokens and {len(numbers)} numbers need at least {least}"
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if number_tokens:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), tokenizer.pre_tokenizer]
        )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(numbers),
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.add_tokens(numbers)
    missing = vocab_size - tokenizer.get_vocab_size(with_added_tokens=True)
    tokenizer.add_special_tokens([f"<unused{i}>" for i in range(missing)])
    return TextTokenizer(tokenizer, {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"})
