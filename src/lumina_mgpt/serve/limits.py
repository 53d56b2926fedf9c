"""What one server accepts and how it batches (a light module: the CLI reads its defaults)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Per-request limits (beyond them: 400), the queue bound (429) and the batching policy."""

    max_images: int = 4  # `n` of one request
    max_pixels: int = 1024 * 1024  # of one generated image
    max_input_pixels: int = 2048 * 2048  # of one image sent to chat
    max_chat_images: int = 4  # images in one chat request
    max_prompt_chars: int = 2000  # of a prompt, or of all the text of a chat
    max_new_tokens: int = 16384  # a chat reply's `max_tokens`
    max_body_bytes: int = 32 * 1024 * 1024
    max_queue: int = 64  # requests waiting for the model; one more gets 429
    max_batch_images: int = 16  # images (rows) in one decode batch; one request is never split
    batch_window_s: float = 0.01  # how long an idle worker waits for companions of a new request
