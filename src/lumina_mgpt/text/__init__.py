"""Text side: the tokenizer wrapper and the chat serialisation shared by v1, v2 and ours."""

from lumina_mgpt.text.conversation import IGNORE_INDEX, Message, Segment, serialize, split_response
from lumina_mgpt.text.tokenizer import IMAGE_PLACEHOLDER, TextTokenizer, build_text_tokenizer

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_PLACEHOLDER",
    "Message",
    "Segment",
    "TextTokenizer",
    "build_text_tokenizer",
    "serialize",
    "split_response",
]
