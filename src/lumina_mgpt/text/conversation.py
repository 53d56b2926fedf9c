"""Chat serialisation of the releases (v1, v2 and ours alike) and the split of a generated reply.

A conversation is `[BOS] message_1 <sep> message_2 <sep> ...`: no roles, no system prompt, a turn separator
after every message. `<|image|>` in a message's text stands for an image block, replaced in order; the text
around it is kept as written (v1's "Depth estimation. <|image|>" keeps its space before the block). A
conversation that ends with a user message ends with an open assistant turn: the place to generate.
"""

from collections.abc import Sequence
from typing import Literal, NamedTuple, TypedDict

import torch

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.text.tokenizer import IMAGE_PLACEHOLDER, TextTokenizer
from lumina_mgpt.unirep import find_image_blocks
from lumina_mgpt.vocab import TokenLayout

IGNORE_INDEX = -100
ImageBlock = torch.Tensor | Sequence[int]


class Message(TypedDict, total=False):
    """One turn. `images`: the Uni-Rep blocks (token ids) of its `<|image|>` placeholders, in order."""

    role: Literal["user", "assistant"]
    content: str
    images: list[ImageBlock]


class Segment(NamedTuple):
    """A piece of a reply: "text" ids, a closed "image" block, or an "unfinished_image" cut off by the limit."""

    kind: Literal["text", "image", "unfinished_image"]
    ids: torch.Tensor


def serialize(
    messages: Sequence[Message],
    tokenizer: TextTokenizer,
    layout: TokenLayout,
    image_blocks: Sequence[ImageBlock] | None = None,
    *,
    response_prefix: ImageBlock | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Messages -> (input_ids, labels), both LongTensor[n].

    Turns alternate, user first. Image blocks come from each message's "images" or, when given, from
    `image_blocks` (one flat list for the whole conversation, consumed in order; the messages' "images"
    are then ignored, e.g. pixels the caller has encoded); the placeholder counts must match.
    Labels are IGNORE_INDEX except on assistant messages: their text, image blocks and separator. If the
    last message is the user's, the result ends with the open assistant turn, followed by
    `response_prefix` when given (v2 image-to-image: an open block holding the given rows).
    """
    if not messages:
        raise LuminaError("a conversation needs at least one message")
    per_message = _images_per_message(messages, image_blocks)
    ids: list[torch.Tensor] = [torch.tensor([layout.bos_id])]
    labels: list[torch.Tensor] = [torch.tensor([IGNORE_INDEX])]
    for index, (message, images) in enumerate(zip(messages, per_message, strict=True)):
        pieces = []
        for k, text in enumerate(message["content"].split(IMAGE_PLACEHOLDER)):
            if k:
                pieces.append(_as_block(images[k - 1], layout, f"image {k - 1} of message {index}"))
            pieces.append(torch.tensor(tokenizer.encode(text), dtype=torch.long))
        pieces.append(torch.tensor([layout.turn_sep_id]))
        turn = torch.cat(pieces)
        ids.append(turn)
        labels.append(turn if message["role"] == "assistant" else torch.full_like(turn, IGNORE_INDEX))
    if response_prefix is not None:
        if messages[-1]["role"] == "assistant":
            raise LuminaError(
                "a response prefix needs an open assistant turn: the last message must be the user's"
            )
        prefix = torch.as_tensor(response_prefix, dtype=torch.long).flatten()
        ids.append(prefix)
        labels.append(torch.full_like(prefix, IGNORE_INDEX))
    return torch.cat(ids), torch.cat(labels)


def split_response(ids: torch.Tensor | Sequence[int], layout: TokenLayout) -> list[Segment]:
    """Cut a generated reply into text pieces and image blocks, in order.

    The reply ends at its first turn separator (v1 stops there); an image start with no end after it gives
    a final "unfinished_image" segment.
    """
    ids = torch.as_tensor(ids, dtype=torch.long)
    if ids.dim() != 1:
        raise LuminaError(f"a reply must be a 1-D sequence of token ids, got shape {list(ids.shape)}")
    separators = torch.nonzero(ids == layout.turn_sep_id).flatten()
    if separators.numel():
        ids = ids[: int(separators[0])]
    segments, cursor = [], 0
    for start, end in find_image_blocks(ids, layout):
        if start > cursor:
            segments.append(Segment("text", ids[cursor:start]))
        segments.append(Segment("image", ids[start:end]))
        cursor = end
    rest = ids[cursor:]
    opened = torch.nonzero(rest == layout.image_start_id).flatten()
    split = int(opened[-1]) if opened.numel() else rest.numel()
    if split:
        segments.append(Segment("text", rest[:split]))
    if split < rest.numel():
        segments.append(Segment("unfinished_image", rest[split:]))
    return segments


def _images_per_message(
    messages: Sequence[Message], image_blocks: Sequence[ImageBlock] | None
) -> list[list[ImageBlock]]:
    """Check roles, contents and placeholder counts; the image blocks of each message."""
    counts = []
    for index, message in enumerate(messages):
        expected = "user" if index % 2 == 0 else "assistant"
        if message.get("role") != expected:
            raise LuminaError(
                f"message {index} has role {message.get('role')!r}, expected {expected!r} "
                "(turns alternate, user first)"
            )
        if not isinstance(message.get("content"), str):
            raise LuminaError(
                f"message {index} content must be a str, got {type(message.get('content')).__name__}"
            )
        counts.append(message["content"].count(IMAGE_PLACEHOLDER))
    if image_blocks is None:
        per_message = [list(message.get("images") or []) for message in messages]
        for index, (count, images) in enumerate(zip(counts, per_message, strict=True)):
            if count != len(images):
                raise LuminaError(
                    f"message {index} has {count} {IMAGE_PLACEHOLDER} placeholder(s) but "
                    f"{len(images)} image(s)"
                )
        return per_message
    if sum(counts) != len(image_blocks):
        raise LuminaError(
            f"the conversation has {sum(counts)} {IMAGE_PLACEHOLDER} placeholder(s) but "
            f"{len(image_blocks)} image block(s)"
        )
    offsets = [sum(counts[:index]) for index in range(len(counts) + 1)]
    return [list(image_blocks[offsets[i] : offsets[i + 1]]) for i in range(len(counts))]


def _as_block(block: ImageBlock, layout: TokenLayout, where: str) -> torch.Tensor:
    block = torch.as_tensor(block, dtype=torch.long)
    if block.dim() != 1 or block.numel() < 4:
        raise LuminaError(f"{where} is not a 1-D image block of token ids (shape {list(block.shape)})")
    if block[0] != layout.image_start_id or block[-1] != layout.image_end_id:
        raise LuminaError(
            f"{where} does not run from image start {layout.image_start_id} to image end "
            f"{layout.image_end_id}"
        )
    return block
