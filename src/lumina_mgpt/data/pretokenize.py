"""Pre-tokenise JSONL records into token shards.

Records, one JSON object per line (image paths relative to the JSONL file's folder):
- text-to-image: `{"image": path, "caption": text}` (v2's `{"image_path", "prompt"}` too). The image is fitted
  to the nearest aspect-ratio bucket of the target area; the prompt is the resolution-aware one, or in 10%
  of records (decided by the record's `id`, else its line number, and the seed) the variant without the size;
- any task: `{"conversations": [{"from": "human"|"gpt", "value": text}, ...], "images": [paths]}` (v1's
  `"image"` and `{"role": "user"|"assistant", "content"}` turns too) with one `<|image|>` per image, and an
  optional `"task"` name for Omni-SFT mixing.

Records are cut into shards of `records_per_shard` by line order; shard k belongs to rank k mod world_size,
so ranks (e.g. under torchrun) split the work. A shard is written atomically when done and skipped when a
run is repeated with the same records, text tokenizer and settings (its fingerprint), so an interrupted run
resumes; a shard written from other ones is redone. A record that cannot be used (unreadable image, malformed
record) is reported with its line number and skipped; each shard lists its skipped records.
"""

import hashlib
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from lumina_mgpt.data.encode import check_factor, conversation_sample, encode_images
from lumina_mgpt.data.shards import SHARD_GLOB, Sample, Shard, write_shard
from lumina_mgpt.errors import LuminaError
from lumina_mgpt.text import IMAGE_PLACEHOLDER, Message, TextTokenizer
from lumina_mgpt.unirep import buckets, t2i_prompt
from lumina_mgpt.vocab import TokenLayout
from lumina_mgpt.vq import ImageTokenizer, fit_to_bucket, to_rgb

SIZELESS_PROMPT_RATE = 0.1  # v2 drops "of WxH" from this share of its text-to-image prompts
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


@dataclass
class PretokenizeReport:
    shards_written: int = 0
    shards_already_done: int = 0
    samples: int = 0
    skipped: list[int] = field(default_factory=list)  # line numbers of skipped records


@dataclass
class _Record:
    line: int
    messages: list[Message]
    images: list[Image.Image]
    task: str


def pretokenize(
    records: str | os.PathLike,
    out: str | os.PathLike,
    *,
    tokenizer: TextTokenizer,
    layout: TokenLayout,
    image_tokenizer: ImageTokenizer,
    area: int,
    seed: int = 0,
    records_per_shard: int = 1024,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int = 16,
    progress: bool = True,
) -> PretokenizeReport:
    """Tokenise this rank's shards of `records` into `out`; see the module docstring."""
    check_settings(image_tokenizer, layout, area, rank, world_size)
    records, out = Path(records), Path(out)
    try:
        lines = records.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise LuminaError(f"{records}: cannot read ({err.strerror})") from None
    report = PretokenizeReport()
    shard_count = (len(lines) + records_per_shard - 1) // records_per_shard
    ours = {f"shard-{k:05d}.safetensors" for k in range(shard_count)}
    foreign = sorted(p.name for p in out.glob(SHARD_GLOB) if p.name not in ours)
    if foreign:
        raise LuminaError(
            f"{out / foreign[0]} is not one of the {shard_count} shards of {records} (left by other "
            "records or --records-per-shard?): delete it or use another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    mine = range(rank, shard_count, world_size)
    bar = tqdm(
        total=sum(min(records_per_shard, len(lines) - k * records_per_shard) for k in mine),
        unit="record",
        disable=not progress,
    )
    settings = {"area": str(area), "layout": layout.name, "seed": str(seed)}
    vocab = hashlib.sha256(tokenizer.tokenizer.to_str().encode()).hexdigest()
    for k in mine:
        path = out / f"shard-{k:05d}.safetensors"
        first = k * records_per_shard
        chunk = lines[first : first + records_per_shard]
        fingerprint = hashlib.sha256(json.dumps([settings, vocab, first, chunk]).encode()).hexdigest()
        if path.exists():
            done = Shard(path).metadata
            if done.get("fingerprint") == fingerprint:
                report.shards_already_done += 1
                report.skipped += json.loads(done["skipped"])
                bar.update(len(chunk))
                continue
            bar.write(f"{path.name}: written from other records, tokenizer or settings: redone")
        samples: list[Sample] = []
        skipped: list[int] = []
        for start in range(0, len(chunk), batch_size):
            parsed = []
            for offset, text in enumerate(chunk[start : start + batch_size]):
                line = first + start + offset + 1
                if not text.strip():
                    continue
                try:
                    parsed.append(_read_record(text, line, records.parent, area, seed))
                except LuminaError as err:
                    bar.write(f"record {line}: skipped: {err}")
                    skipped.append(line)
            samples += _encode(parsed, tokenizer, layout, image_tokenizer, batch_size, skipped, bar)
            bar.update(len(chunk[start : start + batch_size]))
        tasks = sorted({s.task for s in samples})
        write_shard(
            path,
            samples,
            tasks,
            {
                **settings,
                "source": records.name,
                "fingerprint": fingerprint,
                "skipped": json.dumps(sorted(skipped)),
            },
        )
        report.shards_written += 1
        report.samples += len(samples)
        report.skipped += skipped
    bar.close()
    report.skipped.sort()
    return report


def check_settings(
    image_tokenizer: ImageTokenizer, layout: TokenLayout, area: int, rank: int = 0, world_size: int = 1
) -> None:
    """Refuse settings under which no record could be tokenised, before any work."""
    check_factor(image_tokenizer, layout)
    _check_area(area, layout)
    if not 0 <= rank < world_size:
        raise LuminaError(f"rank {rank} is outside 0..{world_size - 1} (world size {world_size})")


def default_area(layout: TokenLayout, largest: int = 512) -> int:
    """The largest area side up to `largest` px whose every bucket fits the layout's largest image side."""
    unit, limit = layout.size_unit_px, layout.max_size_units * layout.size_unit_px
    fitting = [a for a in range(unit, largest + 1, unit) if max(map(max, buckets(a, unit))) <= limit]
    if not fitting:
        raise LuminaError(f"layout {layout.name} has no area whose buckets fit its {limit} px image side")
    return fitting[-1]


def _check_area(area: int, layout: TokenLayout) -> None:
    """Refuse an area that has no buckets or only buckets too large for the layout (every record would fail)."""
    buckets(area)  # fit_to_bucket's: a positive multiple of 32 px
    if area > layout.max_size_units * layout.size_unit_px:
        raise LuminaError(
            f"area {area} px is larger than layout {layout.name}'s largest image side, "
            f"{layout.max_size_units * layout.size_unit_px} px"
        )


def _encode(
    records: list[_Record],
    tokenizer: TextTokenizer,
    layout: TokenLayout,
    image_tokenizer: ImageTokenizer,
    batch_size: int,
    skipped: list[int],
    bar: tqdm,
) -> list[Sample]:
    codes = encode_images([image for r in records for image in r.images], image_tokenizer, batch_size)
    samples, used = [], 0
    for record in records:
        grids, used = codes[used : used + len(record.images)], used + len(record.images)
        try:
            samples.append(
                conversation_sample(record.messages, grids, tokenizer, layout, record.task, record.line)
            )
        except LuminaError as err:
            bar.write(f"record {record.line}: skipped: {err}")
            skipped.append(record.line)
    return samples


def _read_record(text: str, line: int, base: Path, area: int, seed: int) -> _Record:
    """Parse one JSONL line and load its images fitted to the buckets; LuminaError on any problem."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise LuminaError(f"invalid JSON ({err.msg})") from None
    if not isinstance(record, dict):
        raise LuminaError("expected a JSON object")
    if "conversations" in record:
        paths = record.get("images", record.get("image", []))
        paths = [paths] if isinstance(paths, str) else paths
        images = [load_image(base, p, area) for p in paths]
        messages = [_message(turn, i) for i, turn in enumerate(record["conversations"])]
        return _Record(line, messages, images, str(record.get("task", "conversation")))
    path, caption = record.get("image", record.get("image_path")), record.get("caption", record.get("prompt"))
    if not isinstance(path, str) or not isinstance(caption, str):
        raise LuminaError("expected 'image' and 'caption' strings, or 'conversations'")
    image = load_image(base, path, area)
    prompt = t2i_prompt(caption, *image.size)
    key = str(record.get("id", line))
    if np.random.default_rng([seed, zlib.crc32(key.encode())]).random() < SIZELESS_PROMPT_RATE:
        prompt = prompt.replace(" of {}x{}".format(*image.size), "", 1)
    messages = [Message(role="user", content=prompt), Message(role="assistant", content=IMAGE_PLACEHOLDER)]
    return _Record(line, messages, [image], str(record.get("task", "t2i")))


def _message(turn: Any, index: int) -> Message:
    if not isinstance(turn, dict):
        raise LuminaError(f"conversation turn {index} is not an object")
    role = _ROLES.get(turn.get("from", turn.get("role")))
    content = turn.get("value", turn.get("content"))
    if role is None or not isinstance(content, str):
        raise LuminaError(f"conversation turn {index} needs 'from' (human/gpt) and a 'value' string")
    return Message(role=role, content=content)


def load_image(base: Path, path: Any, area: int) -> Image.Image:
    if not isinstance(path, str):
        raise LuminaError(f"image path must be a string, got {path!r}")
    try:
        with Image.open(base / path) as image:
            image.load()
            return fit_to_bucket(to_rgb(image), area)  # as chats fit their input images
    except FileNotFoundError:
        raise LuminaError(f"image {path} not found") from None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise LuminaError(f"cannot read image {path} ({err})") from None


def record_image_paths(records: Path) -> list[str]:
    """The image paths the lines of `records` name, in order (lines that are not valid records skipped)."""
    paths = []
    for text in records.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        named = record.get("images", record.get("image", record.get("image_path", [])))
        paths += [p for p in ([named] if isinstance(named, str) else named) if isinstance(p, str)]
    return paths
