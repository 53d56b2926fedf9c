"""Request bodies of the HTTP API (OpenAI's shapes plus our sampling extensions), strictly typed.

Unknown fields are refused rather than ignored, so a misspelt extension (`cfg` for `cfg_scale`) is a clear
400 instead of a silently different image.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from lumina_mgpt.generate.sampling import MAX_SEED

MAX_TOP_K = 2**31 - 1  # more than any vocabulary: 'all'
OutputFormat = Literal["png", "jpeg", "webp"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ImageGenerationRequest(_Body):
    """`POST /v1/images/generations`. `temperature`/`top_k`/`top_p` sample the image tokens; `seed` k is image
    k's stream (seed + k), so a request gives the same images whether it shares a decode batch or not."""

    prompt: str = Field(min_length=1)
    model: str | None = None
    n: int = Field(1, ge=1)
    size: str | None = None  # "WxH" in pixels, or "auto" / null for the model's canvas
    response_format: Literal["b64_json", "url"] = "b64_json"
    output_format: OutputFormat = "png"
    output_compression: int | None = Field(None, ge=0, le=100)  # jpeg / webp quality
    stream: bool = False
    user: str | None = None
    quality: Literal["auto", "standard", "hd", "low", "medium", "high"] | None = None  # ignored
    style: Literal["vivid", "natural"] | None = None  # ignored
    moderation: Literal["auto", "low"] | None = None  # ignored
    background: Literal["auto", "opaque"] | None = None  # images are always opaque
    partial_images: int | None = Field(None, ge=0, le=3)  # ignored: streams send every finished row
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    cfg_scale: float | None = Field(None, ge=0, le=100)
    temperature: float | None = Field(None, ge=0, le=100)
    top_k: int | None = Field(None, ge=0, le=MAX_TOP_K)
    top_p: float | None = Field(None, gt=0, le=1)
    speculative: bool | Literal["off", "exact", "reference"] | None = None


class ImageEditRequest(ImageGenerationRequest):
    """The form fields of `POST /v1/images/edits` (multipart; `image` and `mask` are its files). Form values
    arrive as text, so numbers and booleans are read from their text, strictly otherwise."""

    model_config = ConfigDict(extra="forbid", strict=False, allow_inf_nan=False)

    input_fidelity: Literal["low", "high"] | None = None  # ignored


# OpenAI fields this server accepts but that change nothing (listed in /v1/models as `ignored_fields`)
IGNORED_IMAGE_FIELDS = (
    "quality",
    "style",
    "moderation",
    "background",
    "user",
    "partial_images",
    "input_fidelity",
)


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ImageURL(_Body):
    url: str  # a data URL: data:image/png;base64,...
    detail: str | None = None


class ImagePart(_Body):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ReplyImage(_Body):
    """An image of an assistant message's `images` (this server's replies): at `offset` in its content."""

    image_url: ImageURL
    offset: int = Field(0, ge=0)


class ChatMessage(_Body):
    role: Literal["user", "assistant"]
    content: str | list[ContentPart]
    images: list[ReplyImage] | None = None  # an assistant reply of this server, sent back as history


class ChatCompletionRequest(_Body):
    """`POST /v1/chat/completions`. As in OpenAI, `temperature`/`top_p` (and our `top_k`) sample the text;
    `image_temperature`/`image_top_k`/`image_top_p` and `cfg_scale` sample the images the model draws, and
    `size` is theirs."""

    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = None
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    user: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    temperature: float | None = Field(None, ge=0, le=100)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, le=MAX_TOP_K)
    size: str | None = None
    cfg_scale: float | None = Field(None, ge=0, le=100)
    image_temperature: float | None = Field(None, ge=0, le=100)
    image_top_k: int | None = Field(None, ge=0, le=MAX_TOP_K)
    image_top_p: float | None = Field(None, gt=0, le=1)
    speculative: bool | Literal["off", "exact", "reference"] | None = None
    image_markdown: bool = False  # also write the reply's images into `content` as markdown data URLs
