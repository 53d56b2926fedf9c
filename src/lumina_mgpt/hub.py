"""Where every model's files come from, fetched from (or found in) the Hugging Face Hub cache and checked.

The released checkpoints scatter their files over several hub repos; `RELEASES` says, per repo id of both
releases, where the transformer, the text tokenizer and the image tokenizer are (see docs/releases.md):

- v1 (Lumina-mGPT 7B/34B): the model repo holds the transformer only; the text tokenizer is
  `Alpha-VLLM/Lumina-mGPT-7B-768`'s (the v1 code hard-codes it for every model) and the Chameleon VQGAN is
  `Alpha-VLLM/Chameleon_7B_mGPT`'s `original_tokenizers/` (a copy of Meta's licence-gated download).
- v2 (Lumina-mGPT 2.0 and -Omni): the model repo holds the transformer and its tokenizer; the image tokenizer is
  `ai-forever/MoVQGAN`'s `movqgan_270M.ckpt`.

Any other repo id or folder is one of ours: `config.json` + safetensors, `tokenizer.json` and `vq/`. Explicit
paths (or repo ids) for the tokenizers override the table. `huggingface_hub` does the fetching, so HF_HUB_OFFLINE,
HF_HUB_CACHE / HF_HOME, HF_TOKEN and HF_ENDPOINT apply; hub errors become one line naming the repo and the fix,
and every file is checked (present, safetensors and zip checkpoints complete) before it is used.
"""

import json
import os
import struct
import zipfile
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from lumina_mgpt.errors import LuminaError

DEFAULT_MODEL = Path(__file__).parent / "models" / "shapes"
MODEL_PATTERNS = ("config.json", "*.safetensors", "model.safetensors.index.json")  # a transformer's files
OURS_PATTERNS = (*MODEL_PATTERNS, "tokenizer.json", "sampling.json", "vq/*")  # our layout, the preset too


@dataclass(frozen=True)
class Source:
    """Files of one hub repo: `patterns` to fetch (repo-relative globs) and the `entry` a loader reads (a file
    or folder inside the snapshot; "" is the snapshot itself)."""

    repo_id: str
    patterns: tuple[str, ...]
    entry: str = ""
    required: tuple[str, ...] = ()  # files that must be there (a model source also needs its weights)


@dataclass(frozen=True)
class Release:
    """A released checkpoint: its family, resolution and the sources of its three parts."""

    repo_id: str
    family: str  # "v1" or "v2"
    resolution: int  # the side in pixels it was trained at
    model: Source
    text_tokenizer: Source
    image_tokenizer: Source

    @property
    def sources(self) -> tuple[Source, ...]:
        return self.model, self.text_tokenizer, self.image_tokenizer


V1_TEXT_TOKENIZER = Source(
    "Alpha-VLLM/Lumina-mGPT-7B-768", ("tokenizer.json",), "tokenizer.json", ("tokenizer.json",)
)
VQGAN_FILES = ("original_tokenizers/vqgan.yaml", "original_tokenizers/vqgan.ckpt")
V1_IMAGE_TOKENIZER = Source("Alpha-VLLM/Chameleon_7B_mGPT", VQGAN_FILES, "original_tokenizers", VQGAN_FILES)
V2_IMAGE_TOKENIZER = Source(
    "ai-forever/MoVQGAN", ("movqgan_270M.ckpt",), "movqgan_270M.ckpt", ("movqgan_270M.ckpt",)
)


def _v1(name: str, resolution: int) -> Release:
    repo = f"Alpha-VLLM/Lumina-mGPT-{name}"
    return Release(
        repo,
        "v1",
        resolution,
        Source(repo, MODEL_PATTERNS, required=("config.json",)),
        V1_TEXT_TOKENIZER,
        V1_IMAGE_TOKENIZER,
    )


def _v2(name: str) -> Release:
    repo = f"Alpha-VLLM/Lumina-mGPT-{name}"
    model = Source(repo, MODEL_PATTERNS, required=("config.json",))
    text = Source(repo, ("tokenizer.json",), "tokenizer.json", ("tokenizer.json",))
    return Release(repo, "v2", 768, model, text, V2_IMAGE_TOKENIZER)


RELEASES: dict[str, Release] = {
    r.repo_id: r
    for r in (
        _v1("7B-512", 512),
        _v1("7B-768", 768),
        _v1("7B-768-Omni", 768),
        _v1("7B-1024", 1024),
        _v1("34B-512", 512),
        _v1("7B-512-MultiImage", 512),
        _v2("2.0"),
        _v2("2.0-Omni"),
    )
}


@dataclass(frozen=True)
class ModelFiles:
    """The local files `LuminaMGPTPipeline.from_pretrained` loads."""

    folder: Path  # the transformer: config.json + weights
    text_tokenizer: Path  # a tokenizer.json file
    image_tokenizer: Path | None  # a folder or checkpoint for `load_image_tokenizer`; None if not asked for
    release: Release | None = None  # the released checkpoint these files are, if one


def resolve_model(
    path_or_repo_id: str | os.PathLike | None,
    text_tokenizer: str | os.PathLike | None = None,
    image_tokenizer: str | os.PathLike | None = None,
    want_image_tokenizer: bool = True,
) -> ModelFiles:
    """The local files of a model folder, a released repo id (`RELEASES`) or one of our hub repos; None is the
    shipped shapes-world model. `text_tokenizer` / `image_tokenizer` (paths or repo ids) override the defaults."""
    from lumina_mgpt.vocab import find_tokenizer_file  # imports torch: only on use (a quick `--help`)

    release = RELEASES.get(str(path_or_repo_id)) if path_or_repo_id is not None else None
    folder = fetch(release.model) if release is not None else model_folder(path_or_repo_id)
    text = text_tokenizer or (fetch(release.text_tokenizer) if release is not None else folder)
    text_path = local_path(text)
    try:
        text_file = find_tokenizer_file(text_path)
    except LuminaError:
        raise LuminaError(
            f"{text} holds no tokenizer.json; pass text_tokenizer= (a file, folder or hub repo id)"
        ) from None
    image = image_tokenizer
    if image is None and want_image_tokenizer:
        image = fetch(release.image_tokenizer) if release is not None else folder / "vq"
        if not Path(image).exists():
            raise LuminaError(
                f"{folder} has no vq/ folder; pass image_tokenizer= (a folder, checkpoint file or hub repo id)"
            )
    return ModelFiles(folder, text_file, None if image is None else Path(image), release)


def model_folder(path_or_repo_id: str | os.PathLike | None) -> Path:
    """The local folder of a model path or hub repo id (our layout); None means the shipped default model."""
    if path_or_repo_id is None:
        if not (DEFAULT_MODEL / "config.json").is_file():
            raise LuminaError(
                f"the default model is not installed at {DEFAULT_MODEL}; pass a model folder or hub repo id"
            )
        return DEFAULT_MODEL
    if str(path_or_repo_id) in RELEASES:
        return fetch(RELEASES[str(path_or_repo_id)].model)
    return resolve_folder(path_or_repo_id, OURS_PATTERNS)


def resolve_folder(path_or_repo_id: str | os.PathLike, patterns: tuple[str, ...]) -> Path:
    """A local folder as is, else the files matching `patterns` of a hub repo id (fetched, or found in the
    cache when HF_HUB_OFFLINE is set)."""
    path = Path(path_or_repo_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise LuminaError(f"{path_or_repo_id}: expected a model folder, got a file")
    return fetch(Source(repo_id_of(str(path_or_repo_id)), patterns))


def local_path(path_or_repo_id: str | os.PathLike) -> Path:
    """A local file or folder as is, else a hub repo id `owner/name[/subfolder]` fetched (tokenizer files)."""
    path = Path(path_or_repo_id).expanduser()
    if path.exists():
        return path
    name = str(path_or_repo_id)
    parts = name.split("/")
    repo, sub = (
        repo_id_of(name if len(parts) < 2 or name[:1] in "./~" else "/".join(parts[:2])),
        "/".join(parts[2:]),
    )
    prefix = f"{sub}/" if sub else ""
    names = ("tokenizer.json", "text_tokenizer.json", "config.json", "model.safetensors", "*.ckpt", "*.yaml")
    names += tuple(f"vq/{name}" for name in names)  # a model repo's image tokenizer
    return fetch(Source(repo, tuple(prefix + name for name in names), sub))


def repo_id_of(name: str) -> str:
    """`name` if it can be a hub repo id (`owner/name`), else a one-line error."""
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise LuminaError(f"{name}: no such folder or file (and not a Hugging Face repo id 'owner/name')")
    return name


def fetch(source: Source, cache_dir: str | os.PathLike | None = None) -> Path:
    """The local path (snapshot / entry) a loader reads for a source, its files fetched or found in the hub cache,
    each file checked."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import IncompleteSnapshotError

    with hub_errors(source.repo_id):
        try:
            root = Path(
                snapshot_download(source.repo_id, allow_patterns=list(source.patterns), cache_dir=cache_dir)
            )
        except IncompleteSnapshotError as error:  # offline with files lost: the check names the first needed
            root = Path(error.snapshot_path)
    check_files(root, source)
    return root / source.entry


def plan(source: Source, cache_dir: str | os.PathLike | None = None) -> list[tuple[str, int, bool]]:
    """(file, size in bytes, already cached) for every file of `source` on the hub (a dry run)."""
    from huggingface_hub import snapshot_download

    with hub_errors(source.repo_id):
        infos = snapshot_download(
            source.repo_id, allow_patterns=list(source.patterns), cache_dir=cache_dir, dry_run=True
        )
    return [(i.filename, i.file_size or 0, i.is_cached) for i in infos]


class hub_errors:
    """A context that turns huggingface_hub's errors about `repo_id` into one-line `LuminaError`s."""

    def __init__(self, repo_id: str) -> None:
        self.repo_id = repo_id

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, error: BaseException | None, trace: object) -> bool:
        if error is None or isinstance(error, LuminaError):
            return False
        from huggingface_hub import errors

        while isinstance(error, errors.DryRunError) and error.__cause__ is not None:
            error = error.__cause__  # a dry run wraps the hub's own error
        repo, login = self.repo_id, "log in with `hf auth login` or set HF_TOKEN"
        if isinstance(error, errors.GatedRepoError):
            message = f"{repo} is gated: accept its licence at https://huggingface.co/{repo}, then {login}"
        elif isinstance(error, errors.RepositoryNotFoundError):
            message = f"{repo}: no such repo on the Hugging Face Hub (if it is private, {login})"
        elif isinstance(error, errors.RevisionNotFoundError):
            message = f"{repo}: the revision does not exist on the Hugging Face Hub"
        elif isinstance(error, errors.LocalEntryNotFoundError):
            message = (
                f"{repo} is not in the Hugging Face cache and the Hub cannot be reached (HF_HUB_OFFLINE is "
                "set or no network): run `lumina-mgpt download` where there is network, or pass local paths"
            )
        elif isinstance(error, errors.HFValidationError):
            message = f"{repo}: no such file or folder and not a valid Hugging Face repo id"
        elif isinstance(error, (OSError, errors.HfHubHTTPError)):
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            message = f"{repo}: fetching from the Hugging Face Hub failed ({type(error).__name__}: {reason})"
        else:
            return False
        raise LuminaError(message) from None


def check_files(root: Path, source: Source) -> None:
    """Refuse a snapshot that lacks a file the source needs, or holds a truncated one."""
    fix = f"run `lumina-mgpt download {source.repo_id}` (or delete it from the hub cache and fetch it again)"
    for name in source.required:
        if not (root / name).is_file():
            raise LuminaError(f"{source.repo_id}: {name} is missing (not in {root}); {fix}")
    index = root / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise LuminaError(f"{index}: not a valid weight index; {fix}") from None
        for shard in shards:
            if not (root / shard).is_file():
                raise LuminaError(f"{source.repo_id}: shard {shard} is missing (not in {root}); {fix}")
    elif source.patterns == MODEL_PATTERNS and not (root / "model.safetensors").is_file():
        raise LuminaError(f"{source.repo_id}: model.safetensors is missing (not in {root}); {fix}")
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if path.is_file() and any(fnmatch(name, p) for p in source.patterns):
            check_file(path, fix)


def check_file(path: Path, fix: str) -> None:
    """Refuse a safetensors file shorter or longer than its header says, or a zip checkpoint without its end."""
    size = path.stat().st_size
    if path.suffix == ".safetensors":
        with path.open("rb") as f:
            head = f.read(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            try:
                header = json.loads(f.read(length)) if 0 < length <= size - 8 else None
            except ValueError:
                header = None
        if not isinstance(header, dict):
            raise LuminaError(f"{path}: not a safetensors file, or truncated within its header; {fix}")
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if size != 8 + length + end:
            raise LuminaError(
                f"{path}: truncated download ({size:,} bytes, its header says {8 + length + end:,}); {fix}"
            )
    elif path.suffix in (".ckpt", ".pt", ".bin") and not zipfile.is_zipfile(path):
        with path.open("rb") as f:
            legacy = f.read(2) == b"\x80\x02"  # a pre-zip torch pickle: no end marker to check
        if not legacy:
            raise LuminaError(f"{path}: truncated or not a PyTorch checkpoint (no zip end record); {fix}")


def sources_of(model: str) -> tuple[Source, ...]:
    """Every source a model needs: a release's three, or one of our repos (weights, tokenizer and vq/)."""
    if model in RELEASES:
        return tuple(dict.fromkeys(RELEASES[model].sources))
    return (Source(repo_id_of(model), OURS_PATTERNS, required=("config.json", "tokenizer.json")),)


def download(model: str, cache_dir: str | os.PathLike | None = None, echo=print) -> list[Path]:
    """Fetch everything `model` needs into the hub cache (`cache_dir`, else HF_HUB_CACHE): the total size is
    printed first, huggingface_hub shows progress; a rerun keeps the complete files (a half-fetched one restarts:
    huggingface_hub >= 2 writes each download to its own temporary file); every file is checked after."""
    sources = sources_of(model)
    plans = [plan(source, cache_dir) for source in sources]
    files = [entry for entries in plans for entry in entries]
    total, missing = sum(size for _, size, _ in files), sum(size for _, size, cached in files if not cached)
    echo(f"{model}: {len(files)} files from {len(sources)} repos, {_gb(total)} ({_gb(missing)} to fetch)")
    for source, entries in zip(sources, plans, strict=True):
        for name, size, cached in entries:
            echo(f"  {source.repo_id}/{name}  {_gb(size)}{'  (cached)' if cached else ''}")
    return [fetch(source, cache_dir) for source in sources]


def _gb(size: int) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"
