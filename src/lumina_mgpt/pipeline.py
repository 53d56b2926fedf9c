"""LuminaMGPTPipeline: text-to-image and multimodal chat with one call, for v1, v2 and our own models.

    pipe = LuminaMGPTPipeline.from_pretrained()            # the shipped shapes-world model
    out = pipe("a photo of a red star", width=128, height=128, num_images_per_prompt=4, seed=0)
    out.images[0].save("star.png")
    reply = pipe.chat([{"role": "user", "content": "Describe the image. <|image|>", "images": [img]}])
    fast = pipe("a red star", speculative="exact", window=16)  # speculative Jacobi decoding, same law
    best = pipe("a red star", best_of=4)                        # 4 candidates, the self-verifier's pick

A folder holds the transformer as published (HF Chameleon: `config.json`, safetensors) with `tokenizer.json`
at its root and the image tokenizer in `vq/`. A released repo id (`Alpha-VLLM/Lumina-mGPT-2.0`, ...) finds its
tokenizers where that release takes them (`hub.RELEASES`); `text_tokenizer=` / `image_tokenizer=` override.
"""

import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.best_of import SelfVerifier, Verifier, select_best
from lumina_mgpt.generate.config import GenerationConfig
from lumina_mgpt.generate.engine import DecodeEngine, DecodeSettings, Step
from lumina_mgpt.generate.presets import Preset, preset_for
from lumina_mgpt.generate.sampling import row_seeds
from lumina_mgpt.generate.speculative import SpeculativeSettings
from lumina_mgpt.loading import load_model
from lumina_mgpt.model import ChameleonTransformer
from lumina_mgpt.text import IMAGE_PLACEHOLDER, TextTokenizer, serialize, split_response
from lumina_mgpt.unirep import (
    block_length,
    check_size,
    decode_image_block,
    encode_image_block,
    image_block_prefix,
    prefix_height,
    t2i_prompt,
)
from lumina_mgpt.vocab import TokenLayout
from lumina_mgpt.vq import ImageTokenizer
from lumina_mgpt.vq.images import ImageInput, as_rgb_image, cover, prepare_image

Seed = int | torch.Generator | list[int] | list[torch.Generator] | None


@dataclass
class GenerationOutput:
    images: list[Image.Image]
    tokens: list[torch.Tensor]  # the Uni-Rep block of each image
    stats: dict[str, float]  # prompt_tokens, generated_tokens, forward_passes, accepted_per_forward, seconds
    settings: dict[str, object]  # the sampling settings used
    scores: list[float] | None = None  # best-of-N: the verifier's score of each kept image


@dataclass
class ChatOutput:
    text: str  # the reply's text, `<|image|>` where each image was
    images: list[Image.Image]
    tokens: list[int]  # the reply's token ids (an image prefix included)
    stats: dict[str, float]
    settings: dict[str, object]  # the sampling settings used


@dataclass
class ChatRequest:
    ids: list[int]  # the prompt, ending with the open assistant turn (and the image prefix, if any)
    width: int  # canvas of the images the model draws
    height: int
    prefix: list[int]  # the given start of the reply (an open image block), or []
    with_images: bool = (
        False  # the conversation (or the prefix) holds an image: the preset's chat_with_images
    )


class LuminaMGPTPipeline:
    """A transformer, its text and image tokenizers and their token layout, ready to generate."""

    def __init__(
        self,
        transformer: ChameleonTransformer,
        text_tokenizer: TextTokenizer,
        image_tokenizer: ImageTokenizer,
        layout: TokenLayout,
        preset: Preset | None = None,
        compile: bool = False,
    ) -> None:
        if (
            layout.codebook_size != image_tokenizer.codebook_size
            or layout.latent_factor != image_tokenizer.factor
        ):
            raise LuminaError(
                f"the image tokenizer ({image_tokenizer.codebook_size} codes, factor {image_tokenizer.factor}) "
                f"does not match the token layout ({layout.codebook_size} codes, factor {layout.latent_factor})"
            )
        self.transformer, self.text_tokenizer, self.image_tokenizer = (
            transformer,
            text_tokenizer,
            image_tokenizer,
        )
        self.layout = layout
        self.preset = preset or preset_for(layout.name)
        self.engine = DecodeEngine(transformer, layout, compile=compile)

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | os.PathLike | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        text_tokenizer: str | os.PathLike | None = None,
        image_tokenizer: str | os.PathLike | ImageTokenizer | None = None,
        compile: bool = False,
        quantize: str | None = None,
        tensor_parallel: int = 1,
    ) -> "LuminaMGPTPipeline":
        """Load a model folder or hub repo id (default: the shipped shapes-world model).

        The tokenizers of a released repo id come from where that release takes them (`lumina_mgpt.hub`);
        otherwise the text tokenizer defaults to the folder's `tokenizer.json` / `text_tokenizer.json`, the
        image tokenizer to its `vq/` subfolder; the family (v1, v2, ours) is read from the tokenizer's image-token
        names.
        `compile`: compile the decode step with `torch.compile` (worth it on GPUs; the first call is slow).
        `quantize`: "int8" or "int4" weight-only decoder linears (torchao; int4 needs CUDA and bfloat16).
        `tensor_parallel`: N > 1 splits the transformer over the N processes of this torchrun job (DTensor).
        """
        parts = load_model(
            path_or_repo_id, device, dtype, text_tokenizer, image_tokenizer, quantize, tensor_parallel
        )
        return cls(
            parts.transformer,
            parts.text_tokenizer,
            parts.image_tokenizer,
            parts.layout,
            parts.preset,
            compile,
        )

    # ----------------------------------------------------------------------------------- text to image

    def __call__(
        self,
        prompt: str | Sequence[str],
        width: int | None = None,
        height: int | None = None,
        num_images_per_prompt: int = 1,
        *,
        seed: Seed = None,
        config: GenerationConfig | None = None,
        callback: Callable[[Step], None] | None = None,
        progress: bool = True,
        preview_rows: int = 0,
        on_preview: Callable[[list[Image.Image]], None] | None = None,
        verifier: Verifier | str | None = None,
        **options: Any,
    ) -> GenerationOutput:
        """Generate `num_images_per_prompt` images of `width x height` for each description.

        Each description is wrapped in the resolution-aware template. Image k (prompt-major) samples from its
        own generator seeded `seed + k`, so a batch gives the same images as generating each alone.
        `options` are the text-to-image options of `GenerationConfig` (`cfg_scale`, `temperature`, `top_k`,
        `top_p`, `cfg_schedule`, `force_size`, `speculative`, `window`, `best_of`, ...; `generate/config.py`),
        on top of `config` (default: the model family's preset, `self.generation_config("t2i")`).
        With `on_preview`, partial images (finished latent rows, grey below) are passed every `preview_rows`
        latent rows. `speculative`: decode image grids by speculative Jacobi decoding ("exact" or True: the
        same law as plain sampling; "reference": Lumina-mGPT 2.0's rule) or plainly ("off" or False).
        `best_of` > 1 draws that many candidates per image and keeps the one `verifier` (a callable, or the
        method of the model's own `SelfVerifier`: "pmi" (default) or "caption") scores highest; candidate c
        of image k uses seed `seed + k * best_of + c` (`seed[k] + c` with a list of seeds). `cfg_schedule="reference"`: v2's plain-path guidance (the scale floored
        at 4, larger ones decaying step by step; `generate/guidance.py`), to reproduce its images.
        """
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, Sequence) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise LuminaError(f"prompt must be a string or a non-empty list of strings, got {prompt!r}")
        prompts = list(prompts)
        _check_count("num_images_per_prompt", num_images_per_prompt)
        if on_preview is not None:
            _check_count("preview_rows (with on_preview)", preview_rows)
        if isinstance(verifier, str):  # a self-verifier method: a generation option
            options["verifier"], verifier = verifier, None
        config = self.generation_config("t2i", config, **options)
        if config.best_of != 1:
            if on_preview is not None:
                raise LuminaError("on_preview shows the rows of one drawing; use it with best_of 1")
            if isinstance(seed, list):  # image k's candidates c: seed[k] + c (image k alone with seed[k])
                seed = [s + c for s in row_seeds(seed, len(seed)) for c in range(config.best_of)]
            return select_best(
                lambda n: self(
                    prompts,
                    width,
                    height,
                    n,
                    seed=seed,
                    config=replace(config, best_of=1),
                    callback=callback,
                    progress=progress,
                ),
                prompts,
                num_images_per_prompt,
                config.best_of,
                verifier or SelfVerifier(self, config.verifier),
            )
        width, height = self._canvas(width, height)
        start = [self.layout.image_start_id]
        ids = [
            self._encode_messages([{"role": "user", "content": t2i_prompt(p, width, height)}], start)
            for p in prompts
        ]
        self.check_size(width, height, max(len(p) for p in ids))
        rows = [p for p in ids for _ in range(num_images_per_prompt)]
        budget = block_length(width, height, self.layout) - 1
        if not config.force_size:
            budget = self.transformer.config.max_position_embeddings - max(len(p) for p in ids)
        settings = config.decode_settings(budget, stop_at_image_end=True)
        watch = _Progress(budget, progress, callback)
        if on_preview is not None and config.force_size:
            watch.add(self._previewer(width, height, preview_rows, on_preview))
        with watch:
            result = self.engine.generate(
                rows, settings, row_seeds(seed, len(rows)), [(width, height)] * len(rows), callback=watch
            )
        blocks = [torch.tensor(start + tokens) for tokens in result.tokens]
        return GenerationOutput(self._decode_blocks(blocks), blocks, result.stats, _describe(settings))

    def generation_config(
        self,
        use: str,
        config: GenerationConfig | None = None,
        *,
        with_images: bool = False,
        **options: Any,
    ) -> GenerationConfig:
        """The config of a call of `use` ("t2i", "chat" or "edit"): `config` (default: the preset's, of a
        conversation that holds an image when `with_images`) with the given options (None: unchanged); a
        `SpeculativeSettings` as `speculative` gives all its fields."""
        if isinstance(options.get("speculative"), SpeculativeSettings):
            spec = options.pop("speculative")
            options |= {
                "speculative": spec.mode,
                "window": options.get("window") or spec.window,
                "coupling": spec.coupling,
                "draft_init": spec.draft_init,
                "nsigma": spec.nsigma,
            }
        return (config or self.preset.config(use, with_images)).updated(use, **options)

    # ----------------------------------------------------------------------------------------------- chat

    def chat(
        self,
        messages: Sequence[dict],
        width: int | None = None,
        height: int | None = None,
        *,
        image_prefix: ImageInput | None = None,
        **options: Any,
    ) -> ChatOutput:
        """Answer a conversation of `{"role", "content", "images"}` dicts (see `prepare_chat` for the canvas
        and `image_prefix`); `options` (seed, sampling, limits, speculative decoding) as for `chat_many`."""
        return self.chat_many([self.prepare_chat(messages, width, height, image_prefix)], **options)[0]

    def chat_many(
        self,
        requests: Sequence[ChatRequest],
        *,
        seed: Seed = None,
        config: GenerationConfig | None = None,
        callback: Callable[[Step], None] | None = None,
        progress: bool = False,
        **options: Any,
    ) -> list[ChatOutput]:
        """Answer several prepared chats (`prepare_chat`) as one decode batch, one reply each, in order.

        `options` are the chat options of `GenerationConfig` (image `temperature`/`top_k`/`top_p`, their
        `text_` counterparts, `cfg_scale`, `force_size`, `max_new_tokens`, `speculative`, `window`, ...) on top
        of `config` (default: the preset's chat config, or its `chat_with_images` for a chat that holds an
        image; chats whose configs differ decode as separate batches). A reply stops at the turn separator (or
        the family's stop token) or after `max_new_tokens` (default: room for four images of its canvas); an
        image cut off by the limit is dropped and counted in `stats["unfinished_images"]`. Speculative decoding
        applies to image grids only. Reply k samples from its own stream seeded `seed + k` (or `seed[k]`), so
        it is the reply `chat` gives that conversation alone with that seed. Each reply's `stats` hold its own
        `prompt_tokens`, `generated_tokens` and `unfinished_images`, and its batch's forwards and time.
        """
        if not requests:
            raise LuminaError("chat_many needs at least one chat request")
        if not all(isinstance(r, ChatRequest) for r in requests):
            raise LuminaError("chat_many takes prepared chats: [pipe.prepare_chat(messages), ...]")
        seeds = row_seeds(seed, len(requests))
        batches: dict[GenerationConfig, list[int]] = {}
        for k, r in enumerate(requests):
            batches.setdefault(
                self.generation_config("chat", config, with_images=r.with_images, **options), []
            ).append(k)
        outputs: list[ChatOutput | None] = [None] * len(requests)
        for batch_config, rows in batches.items():
            replies = self._chat_batch(
                [requests[k] for k in rows], [seeds[k] for k in rows], batch_config, callback, progress
            )
            for k, output in zip(rows, replies, strict=True):
                outputs[k] = output
        return outputs

    def _chat_batch(
        self,
        requests: list[ChatRequest],
        seeds: list[int],
        config: GenerationConfig,
        callback: Callable[[Step], None] | None,
        progress: bool,
    ) -> list[ChatOutput]:
        """One decode batch of chats of one config (`chat_many`)."""
        positions = self.transformer.config.max_position_embeddings
        budgets = [
            config.max_new_tokens
            if config.max_new_tokens is not None
            else min(positions - len(r.ids), 4 * block_length(r.width, r.height, self.layout) + 256)
            for r in requests
        ]
        budget = max(budgets)
        settings = config.decode_settings(budget)
        with _Progress(budget, progress, callback) as watch:
            result = self.engine.generate(
                [r.ids for r in requests],
                settings,
                seeds,
                [(r.width, r.height) for r in requests],
                callback=watch,
                budgets=budgets,
            )
        described, outputs = _describe(settings), []
        for r, tokens in zip(requests, result.tokens, strict=True):
            reply = r.prefix + tokens
            text, blocks, cut = self._split_reply(reply)
            # each reply's images decode apart: a batched VQ decode can round a pixel differently (±1)
            own = {
                "prompt_tokens": len(r.ids),
                "generated_tokens": len(tokens),
                "unfinished_images": cut,
            }
            outputs.append(
                ChatOutput(text, self._decode_blocks(blocks), reply, result.stats | own, described)
            )
        return outputs

    def _split_reply(self, reply: list[int]) -> tuple[str, list[list[int]], int]:
        """A reply's text (`<|image|>` where each image was), its closed image blocks, and its count of
        images cut off by the token limit."""
        text, blocks, unfinished = [], [], 0
        for segment in split_response(reply, self.layout):
            if segment.kind == "text":
                text.append(self.text_tokenizer.decode(segment.ids))
            elif segment.kind == "image":
                text.append(IMAGE_PLACEHOLDER)
                blocks.append(segment.ids)
            else:
                unfinished += 1
        return "".join(text), blocks, unfinished

    def prepare_chat(
        self,
        messages: Sequence[dict],
        width: int | None = None,
        height: int | None = None,
        image_prefix: ImageInput | None = None,
    ) -> ChatRequest:
        """The prompt of a chat: messages ending with the user's turn, user first.

        `<|image|>` in a message stands for its images in order (PIL or uint8 arrays; images without
        placeholders go before the text, as v1 does). Images the model draws are `width x height`; input
        images are resized to that canvas when it is given, else kept if their size is a bucket of the preset
        canvas area, else fitted to the nearest bucket, and the canvas is the last input image's size (or the
        preset canvas). `image_prefix` starts the reply with that image as the upper
        half of the canvas, in whole grid rows (v2 image-to-image: canvas by default the prefix's width and
        twice its height; see `unirep.prefix_height`); the reply then includes the prefix, so the returned image
        is the whole canvas.
        """
        if isinstance(messages, str | bytes | dict) or not all(isinstance(m, dict) for m in messages):
            raise LuminaError("a chat is a list of message dicts, e.g. [{'role': 'user', 'content': 'Hi'}]")
        if messages and messages[-1].get("role") == "assistant":  # serialize checks the roles
            raise LuminaError("a chat needs messages ending with the user's turn")
        encoded, sizes = [], []
        canvas = (
            (width, height) if width is not None and height is not None and image_prefix is None else None
        )
        if canvas is not None:
            self.check_size(*canvas)
        for message in messages:
            if not isinstance(message.get("images") or [], list | tuple):
                raise LuminaError("a message's 'images' must be a list of images")
            images = [self._fit(image, canvas) for image in message.get("images") or []]
            sizes += [image.size for image in images]
            content = message.get("content")
            if images and isinstance(content, str) and IMAGE_PLACEHOLDER not in content:
                content = f"{IMAGE_PLACEHOLDER} " * len(images) + content
            blocks = [
                encode_image_block(self.image_tokenizer.encode_image(image).cpu(), self.layout)
                for image in images
            ]
            encoded.append({"role": message.get("role"), "content": content, "images": blocks})
        prefix = []
        if image_prefix is not None:
            upper = as_rgb_image(image_prefix)
            width = upper.width if width is None else width
            height = 2 * upper.height if height is None else height
            self.check_size(width, height)
            upper = cover(upper, (width, prefix_height(height, self.layout)))
            codes = self.image_tokenizer.encode_image(upper).cpu()
            prefix = image_block_prefix(codes, height, self.layout).tolist()
        width, height = self._canvas(width, height, sizes[-1] if sizes else None)
        ids = self._encode_messages(encoded, prefix or None)
        self.check_size(width, height, len(ids))
        return ChatRequest(ids, width, height, prefix, bool(sizes or prefix))

    # ---------------------------------------------------------------------------------------------- helpers

    def check_size(self, width: int, height: int, prompt_tokens: int = 0) -> None:
        """Raise LuminaError (listing valid sizes nearby) unless the model can draw a `width x height` image
        after a prompt of `prompt_tokens` tokens."""
        check_size(width, height, self.layout, self.transformer.config.max_position_embeddings, prompt_tokens)

    def encode_image(self, image: ImageInput, size: tuple[int, int] | None = None) -> torch.Tensor:
        """The Uni-Rep block of an image: resized to `size` (W, H) if given, else kept if it is a bucket of the
        preset canvas area, else fitted to the nearest bucket."""
        return encode_image_block(
            self.image_tokenizer.encode_image(self._fit(image, size)).cpu(), self.layout
        )

    def _canvas(
        self, width: int | None, height: int | None, fallback: tuple[int, int] | None = None
    ) -> tuple[int, int]:
        default = fallback or self.preset.canvas
        return default[0] if width is None else width, default[1] if height is None else height

    def _fit(self, image: ImageInput, canvas: tuple[int, int] | None = None) -> Image.Image:
        """The input image on `canvas`, else on a bucket of the preset canvas area (`vq.images.prepare_image`)."""
        return prepare_image(image, canvas, self.preset.canvas, self.layout.size_unit_px)

    def _encode_messages(
        self, messages: list[dict], prefix: Sequence[int] | torch.Tensor | None
    ) -> list[int]:
        ids, _ = serialize(messages, self.text_tokenizer, self.layout, response_prefix=prefix)
        return ids.tolist()

    def _decode_blocks(self, blocks: Sequence[torch.Tensor]) -> list[Image.Image]:
        """PIL images of closed blocks, each decoded alone: a batched VQ decode can round a pixel differently
        (±1), and an image must not depend on the batch it was drawn in."""
        tokenizer = self.image_tokenizer
        return [
            tokenizer.to_image(tokenizer.decode(decode_image_block(b, self.layout)[None]))[0] for b in blocks
        ]

    def _previewer(
        self, width: int, height: int, every: int, on_preview: Callable[[list[Image.Image]], None]
    ) -> Callable[[Step], None]:
        """A step callback that decodes the finished latent rows of every image each `every` rows."""
        factor, columns = self.layout.latent_factor, width // self.layout.latent_factor
        grid: list[torch.Tensor] = []

        def preview(step: Step) -> None:
            if step.index >= 2:  # the two size tokens come first
                grid.append(step.tokens.clone())
            rows, at_row_end = divmod(len(grid), columns + 1)
            if at_row_end or rows == 0 or rows % every or rows == height // factor:
                return
            ids = torch.stack(grid, dim=1).view(len(step.tokens), rows, columns + 1)[:, :, :columns]
            pixels = self.image_tokenizer.decode(self.layout.code_of(ids))
            canvas = pixels.new_zeros(len(step.tokens), 3, height, width)  # grey below the finished rows
            canvas[:, :, : rows * factor] = pixels
            on_preview(self.image_tokenizer.to_image(canvas))

        return preview


class _Progress:
    """The step callback of one call: a tqdm bar plus any number of callbacks."""

    def __init__(self, total: int, show: bool, callback: Callable[[Step], None] | None) -> None:
        self.bar = tqdm(total=total, disable=not show, unit="tok", leave=False)
        self.callbacks = [callback] if callback is not None else []

    def add(self, callback: Callable[[Step], None]) -> None:
        self.callbacks.append(callback)

    def __call__(self, step: Step) -> None:
        self.bar.update(1)
        for callback in self.callbacks:
            callback(step)

    def __enter__(self) -> "_Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def _describe(settings: DecodeSettings) -> dict[str, object]:
    """The settings of a call as plain data (for logs and the CLI's JSON)."""
    return {
        "cfg_scale": settings.cfg_scale,
        "cfg_schedule": settings.cfg_schedule,
        "force_size": settings.force_size,
        "max_new_tokens": settings.max_new_tokens,
        "image": asdict(settings.image),
        "text": asdict(settings.text),
        "speculative": None if settings.speculative is None else asdict(settings.speculative),
    }


def _check_count(name: str, value: object) -> None:
    """Refuse a count that is not a whole number >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise LuminaError(f"{name} must be a whole number >= 1, got {value!r}")
