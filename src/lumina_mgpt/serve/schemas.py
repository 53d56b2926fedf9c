"""Request bodies of the HTTP API (OpenAI's shapes plus our sampling extensions), strictly typed.

Unknown fields are refused rather than ignored, so a misspelt extension (`cfg` for `cfg_scale`) is a clear
400 instead of a silently different image. The sampling extensions are the generation config's options of
each use (`generate/config.py`), checked by its rules: the same limits and messages as the CLI and the
pipeline. Chat keeps OpenAI's names for the text's sampling (`CHAT_NAMES`).
"""

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model
from pydantic_core import PydanticCustomError

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.config import Option, option, options_of
from lumina_mgpt.generate.presets import Preset
from lumina_mgpt.generate.sampling import MAX_SEED

OutputFormat = Literal["png", "jpeg", "webp"]
# the chat request's names of generation options: OpenAI's temperature/top_p/max_tokens are the text's
CHAT_NAMES = {
    "text_temperature": "temperature",
    "text_top_k": "top_k",
    "text_top_p": "top_p",
    "temperature": "image_temperature",
    "top_k": "image_top_k",
    "top_p": "image_top_p",
    "max_new_tokens": "max_tokens",
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def option_field(spec: Option) -> tuple[Any, Any]:
    """The request field of a generation option: optional (null: the model's preset), checked by its rule."""

    def check(value: Any) -> Any:
        try:
            return None if value is None else spec.check(value)
        except LuminaError as error:
            raise PydanticCustomError("invalid_option", str(error)) from None

    kind = spec.kind
    for alias, _ in spec.aliases:  # e.g. speculative: true (exact) or false (off)
        kind = kind | type(alias)
    return Annotated[kind | None, AfterValidator(check)], Field(
        None, description=f"{spec.help} ({_limits(spec)})"
    )


def _limits(spec: Option) -> str:
    return (
        ", ".join(spec.choices) if spec.choices else "true or false" if spec.kind is bool else spec.limits()
    )


def _options(use: str, names: dict[str, str] | None = None) -> dict[str, Any]:
    return {(names or {}).get(spec.name, spec.name): option_field(spec) for spec in options_of(use)}


def generation_options(body: BaseModel, use: str) -> dict[str, Any]:
    """The generation options a request body gives (None: not given), by the config's names."""
    names = CHAT_NAMES if use == "chat" else {}
    return {spec.name: getattr(body, names.get(spec.name, spec.name)) for spec in options_of(use)}


def generation_defaults(preset: Preset) -> dict[str, dict[str, Any]]:
    """What an absent option means at each endpoint (a chat whose messages hold an image apart): the model's
    preset, by the request's names."""
    uses = {
        "images/generations": ("t2i", False),
        "images/edits": ("edit", True),
        "chat/completions": ("chat", False),
        "chat/completions with images": ("chat", True),
    }
    defaults = {}
    for endpoint, (use, with_images) in uses.items():
        names = CHAT_NAMES if use == "chat" else {}
        config = preset.config(use, with_images)
        defaults[endpoint] = {names.get(o.name, o.name): getattr(config, o.name) for o in options_of(use)}
    return defaults


class _ImageBody(_Body):
    """The OpenAI fields of the image endpoints; `seed` k is image k's stream (seed + k), so a request gives
    the same images whether it shares a decode batch or not."""

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


ImageGenerationRequest = create_model(
    "ImageGenerationRequest",
    __base__=_ImageBody,
    __doc__="`POST /v1/images/generations`: the OpenAI fields and the text-to-image generation options "
    "(`temperature`/`top_k`/`top_p` sample the image tokens).",
    **_options("t2i"),
)


class _EditBody(_ImageBody):
    """Form values arrive as text, so numbers and booleans are read from their text, strictly otherwise."""

    model_config = ConfigDict(extra="forbid", strict=False, allow_inf_nan=False)

    input_fidelity: Literal["low", "high"] | None = None  # ignored


ImageEditRequest = create_model(
    "ImageEditRequest",
    __base__=_EditBody,
    __doc__="The form fields of `POST /v1/images/edits` (multipart; `image` and `mask` are its files) and the "
    "edit's generation options.",
    **_options("edit"),
)


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


class _ChatBody(_Body):
    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = None
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    user: str | None = None
    max_completion_tokens: option_field(option("max_new_tokens"))[0] = None  # OpenAI's newer max_tokens
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    size: str | None = None
    image_markdown: bool = False  # also write the reply's images into `content` as markdown data URLs


ChatCompletionRequest = create_model(
    "ChatCompletionRequest",
    __base__=_ChatBody,
    __doc__="`POST /v1/chat/completions`. As in OpenAI, `temperature`/`top_p` (and our `top_k`) sample the "
    "text and `max_tokens` limits the reply; `image_temperature`/`image_top_k`/`image_top_p`, `cfg_scale` "
    "and the other chat generation options sample the images the model draws, and `size` is theirs.",
    **_options("chat", CHAT_NAMES),
)
