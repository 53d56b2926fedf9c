"""The shapes-world benchmark runner: GenEval-style text-to-image categories plus the omni tasks, on a square,
a landscape and a portrait canvas, for any model given as two callables.

    generate_fn(prompts: list[str], width, height, num_images_per_prompt, seed) -> list[list[PIL.Image]]
    chat_fn(conversations: list[list[dict]], seeds: list[int]) -> [{"text": str, "images": [PIL.Image, ...]}, ...]

`chat_fn` answers a batch of conversations, one reply each, conversation k sampled with `seeds[k]`: all the
items of one task and canvas at a time, turn by turn. A conversation is a list of `{"role", "content",
"images"}` dicts (see `tasks.py`); one that ends with an assistant message asks for its continuation
(dual-panel i2i). A reply's text may mark its images with `<|image|>`; the markers are dropped before scoring.
A reply may carry an "error" (why the model could not answer; it is scored as it stands and kept in the record).

Writes every image, `items.jsonl` (one line per scored image or task, with its verdict) and `summary.json`
under `out_dir`; returns the summary.
"""

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.unirep import t2i_prompt
from lumina_mgpt.world.captions import benchmark_prompts
from lumina_mgpt.world.detect import as_array
from lumina_mgpt.world.score import MEAN_SCORED, score_t2i, score_task
from lumina_mgpt.world.spec import CATEGORIES
from lumina_mgpt.world.tasks import IMAGE, OMNI_KINDS, TASK_KINDS, Task, assistant, benchmark_tasks

DEFAULT_CANVASES: tuple[tuple[int, int], ...] = ((128, 128), (160, 96), (96, 160))

GenerateFn = Callable[[list[str], int, int, int, int], list[list[Image.Image]]]
ChatFn = Callable[[list[list[dict]], list[int]], list[dict]]


def _seed(seed: int, *keys: int) -> int:
    """A call's seed, derived from the run's seed and the call's position (canvas, category or task, item)."""
    return int(np.random.default_rng([seed, *keys]).integers(2**31 - 1))


def _json(value):
    if isinstance(value, np.integer | np.floating):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _save(image, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(as_array(image)).save(path)
    return str(path)


def _run_tasks(tasks: Sequence[Task], chat_fn: ChatFn, seeds: Sequence[int]) -> list[list[dict]]:
    """Send the tasks' turns one by one, turn t of every task in one `chat_fn` call; each reply joins its
    conversation as an assistant message. Returns each task's replies."""
    histories: list[list[dict]] = [[] for _ in tasks]
    replies: list[list[dict]] = [[] for _ in tasks]
    for turn in range(max((len(task.turns) for task in tasks), default=0)):
        live = [i for i, task in enumerate(tasks) if turn < len(task.turns)]
        for i in live:
            histories[i] += tasks[i].turns[turn]
        answers = chat_fn([list(histories[i]) for i in live], [seeds[i] for i in live])
        if not isinstance(answers, list) or len(answers) != len(live):
            raise LuminaError(f"chat_fn must return a list of {len(live)} replies, one per conversation")
        for i, reply in zip(live, answers, strict=True):
            if not isinstance(reply, dict):
                raise LuminaError(
                    f"chat_fn's replies must be dicts with 'text' and 'images', got {type(reply).__name__}"
                )
            images = [as_array(image, "a chat reply image") for image in reply.get("images") or []]
            text = reply.get("text") or ""
            marked = text.count(IMAGE) == len(images)
            content = text if marked else text.replace(IMAGE, "") + IMAGE * len(images)
            error = {"error": str(reply["error"])} if reply.get("error") else {}
            replies[i].append({"text": text.replace(IMAGE, ""), "images": images, **error})
            histories[i].append(assistant(content, images))
    return replies


def _t2i_items(
    generate_fn: GenerateFn,
    prompts: list,
    canvas: int,
    size: tuple[int, int],
    images_per_prompt: int,
    seed: int,
    out: Path,
):
    """Generate and score one canvas's images, category by category; yields (category, record)."""
    width, height = size
    name = f"{width}x{height}"
    for ki, category in enumerate(CATEGORIES):
        chosen = [(i, d, s) for i, (c, d, s) in enumerate(prompts) if c == category]
        texts = [t2i_prompt(d, width, height) for _, d, _ in chosen]
        batch = generate_fn(texts, width, height, images_per_prompt, _seed(seed, canvas, ki))
        if len(batch) != len(chosen) or any(len(images) != images_per_prompt for images in batch):
            raise LuminaError(f"generate_fn must return {len(chosen)} lists of {images_per_prompt} images")
        for (i, description, spec), text, images in zip(chosen, texts, batch, strict=True):
            for k, image in enumerate(images):
                verdict = score_t2i([spec], image, width, height)
                path = _save(image, out / "t2i" / name / category / f"{i:04d}_{k}.png")
                yield (
                    category,
                    {
                        "type": "t2i",
                        "canvas": name,
                        "category": category,
                        "prompt_index": i,
                        "image_index": k,
                        "description": description,
                        "prompt": text,
                        "spec": spec.to_dict(),
                        "image": path,
                        **verdict.to_dict(),
                    },
                )


def _omni_record(task: Task, index: int, replies: list[dict], out: Path) -> dict:
    """Score one omni task's replies; its record (inputs and replies saved as images)."""
    verdict = score_task(task, replies)
    folder = out / "omni" / f"{task.width}x{task.height}" / task.kind
    inputs = [im for turn in task.turns for m in turn for im in m["images"]]
    return {
        "type": "omni",
        "canvas": f"{task.width}x{task.height}",
        "kind": task.kind,
        "index": index,
        "messages": [m["content"] for turn in task.turns for m in turn],
        "inputs": [_save(im, folder / f"{index:04d}_input{j}.png") for j, im in enumerate(inputs)],
        "replies": [
            {
                **({"error": r["error"]} if "error" in r else {}),
                "text": r["text"],
                "images": [
                    _save(im, folder / f"{index:04d}_turn{t}_{j}.png") for j, im in enumerate(r["images"])
                ],
            }
            for t, r in enumerate(replies)
        ],
        "truth": task.truth,
        **verdict.to_dict(),
    }


def run_benchmark(
    generate_fn: GenerateFn | None,
    chat_fn: ChatFn | None,
    *,
    seed: int = 0,
    n_prompts: int = 10,
    images_per_prompt: int = 4,
    canvases: Sequence[tuple[int, int]] = DEFAULT_CANVASES,
    tasks: Sequence[str] = OMNI_KINDS,
    out_dir: str | Path,
    progress: bool = True,
) -> dict:
    """Run the benchmark: `n_prompts` prompts per text-to-image category (each drawn `images_per_prompt`
    times) and `n_prompts` items per omni task, on every canvas. A None callable skips its half."""
    for kind in tasks:
        if kind not in OMNI_KINDS:
            raise LuminaError(f"unknown omni task {kind!r}; expected some of {', '.join(OMNI_KINDS)}")
    tasks = list(tasks) if chat_fn else []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [f"{w}x{h}" for w, h in canvases]
    prompts = benchmark_prompts(seed, n_prompts) if generate_fn else []
    task_sets = {
        (name, kind): benchmark_tasks(seed, n_prompts, w, h, [kind])
        for name, (w, h) in zip(names, canvases, strict=True)
        for kind in tasks
    }
    total = (len(prompts) * images_per_prompt + len(tasks) * n_prompts) * len(canvases)
    t2i = {name: {c: [] for c in CATEGORIES} for name in names}
    omni = {name: {k: [] for k in tasks} for name in names}

    with (
        open(out / "items.jsonl", "w") as items,
        tqdm(total=total, disable=not progress, desc="benchmark") as bar,
    ):
        for ci, (name, size) in enumerate(zip(names, canvases, strict=True)):
            if generate_fn:
                for category, record in _t2i_items(
                    generate_fn, prompts, ci, size, images_per_prompt, seed, out
                ):
                    t2i[name][category].append(record["score"])
                    items.write(json.dumps(record, default=_json) + "\n")
                    bar.update()
            for kind in tasks:
                chosen = task_sets[name, kind]
                key = len(CATEGORIES) + TASK_KINDS.index(kind)
                replies = _run_tasks(chosen, chat_fn, [_seed(seed, ci, key, i) for i in range(len(chosen))])
                for i, (task, answer) in enumerate(zip(chosen, replies, strict=True)):
                    record = _omni_record(task, i, answer, out)
                    omni[name][kind].append(record["score"])
                    items.write(json.dumps(record, default=_json) + "\n")
                    bar.update()

    summary = {
        "seed": seed,
        "n_prompts": n_prompts,
        "images_per_prompt": images_per_prompt,
        "canvases": names,
        "tasks": tasks,
        **_summarise(t2i, omni, names),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _summarise(t2i: dict, omni: dict, names: list[str]) -> dict:
    """Per canvas and over all canvases: category scores and their mean (overall), omni task scores."""
    summary: dict = {"t2i": {}, "omni": {}}
    for name in [*names, "all"]:
        pick = names if name == "all" else [name]
        scores = {c: _mean([v for n in pick for v in t2i[n][c]]) for c in CATEGORIES}
        if all(v is not None for v in scores.values()):
            summary["t2i"][name] = {**scores, "overall": float(np.mean(list(scores.values())))}
        kinds = omni[names[0]] if names else {}
        tasks = {k: _mean([v for n in pick for v in omni[n][k]]) for k in kinds}
        if tasks and all(v is not None for v in tasks.values()):
            summary["omni"][name] = tasks
    return summary


def format_table(summary: dict) -> str:
    """A GenEval-style table: one row per category (then overall) and per omni task, one column per canvas."""
    names = [*summary["canvases"], "all"]
    lines = [
        f"shapes-world benchmark: seed {summary['seed']}, {summary['n_prompts']} prompts per category and task, "
        f"{summary['images_per_prompt']} images per prompt, canvases {', '.join(summary['canvases'])}",
    ]
    columns = "".join(f"{n:>10}" for n in names)
    if summary["t2i"]:
        lines += ["", f"{'text-to-image':<20}{columns}"]
        for row in [*CATEGORIES, "overall"]:
            lines.append(f"{row:<20}" + "".join(f"{summary['t2i'][n][row]:>10.3f}" for n in names))
    if summary["omni"]:
        lines += ["", f"{'omni task':<20}{columns}"]
        for kind in summary["omni"]["all"]:
            label = kind + (" (mean)" if kind in MEAN_SCORED else "")
            lines.append(f"{label:<20}" + "".join(f"{summary['omni'][n][kind]:>10.3f}" for n in names))
    return "\n".join(lines)
