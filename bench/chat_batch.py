"""Batched chats against one at a time, on the shapes-world omni tasks, in one run.

    python bench/chat_batch.py [--model PATH] [--items 16 --batch 16 --tasks captioning,editing,segmentation]

Answers `--items` benchmark conversations of each task (128x128) twice with the same per-item seeds: one
`pipe.chat` call per conversation, then `pipe.chat_many` calls of `--batch` conversations. Both use the model's
default sampling settings (the shipped model's: exact speculative decoding). Checks that every reply is the same
either way and prints the wall time of each task; the last line is `speedup: <one-at-a-time s / batched s>`.
"""

import argparse
import sys
import time

import torch

from lumina_mgpt.errors import LuminaError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the shipped shapes model)")
    parser.add_argument("--items", type=int, default=16, help="conversations per task")
    parser.add_argument("--batch", type=int, default=16, help="conversations per chat_many call")
    parser.add_argument(
        "--tasks", default="captioning,editing,segmentation", help="comma-separated omni tasks"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from lumina_mgpt.pipeline import LuminaMGPTPipeline
    from lumina_mgpt.world.cli import pipeline_chat_fn
    from lumina_mgpt.world.tasks import benchmark_tasks

    pipe = LuminaMGPTPipeline.from_pretrained(args.model)
    one_at_a_time, batched = (
        pipeline_chat_fn(pipe, batch_size=1),
        pipeline_chat_fn(pipe, batch_size=args.batch),
    )
    pipe.chat([{"role": "user", "content": "Describe the image.", "images": []}], seed=0)  # warm-up
    totals = [0.0, 0.0]
    for kind in args.tasks.split(","):
        conversations = [task.turns[0] for task in benchmark_tasks(0, args.items, 128, 128, [kind])]
        seeds = list(range(len(conversations)))
        seconds, replies = [], []
        for chat in (one_at_a_time, batched):
            began = time.perf_counter()
            replies.append(chat(conversations, seeds))
            seconds.append(time.perf_counter() - began)
        same = all(
            a["text"] == b["text"]
            and [im.tobytes() for im in a["images"]] == [im.tobytes() for im in b["images"]]
            for a, b in zip(*replies, strict=True)
        )
        totals = [t + s for t, s in zip(totals, seconds, strict=True)]
        print(
            f"{kind:<14} one at a time {seconds[0]:7.1f} s   batched {seconds[1]:7.1f} s   same replies: {same}"
        )
    print(f"speedup: {totals[0] / totals[1]:.2f}")


if __name__ == "__main__":
    try:
        main()
    except LuminaError as error:
        sys.exit(f"error: {error}")
