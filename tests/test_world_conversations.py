"""For every omni task, the benchmark asks the shipped model exactly what it was trained on.

The eval's prompts (`lumina-mgpt eval`'s `chat_request`, turn by turn as `run_benchmark` sends them, the model
answering each turn with the true reply) and the training sample of the same item (the world source's
`task_conversation` -> `conversation_sample`) are compared token for token: same text, same image placement,
same given upper half, and the training target after each prompt is the true reply closed by the token the
decoder stops at. The reply's text also decodes back to the answer the scorer parses.
"""

import pytest
import torch
from train_fixtures import one_thread  # noqa: F401 (fixture)

from lumina_mgpt.data.encode import conversation_sample, encode_images
from lumina_mgpt.data.world_source import task_conversation
from lumina_mgpt.pipeline import LuminaMGPTPipeline
from lumina_mgpt.text import split_response
from lumina_mgpt.world import OMNI_KINDS, benchmark_tasks
from lumina_mgpt.world.cli import chat_request
from lumina_mgpt.world.evaluate import DEFAULT_CANVASES, _run_tasks
from lumina_mgpt.world.score import parse_box


@pytest.fixture(scope="module")
def pipe():
    return LuminaMGPTPipeline.from_pretrained()


def _eval_prompts(pipe, task) -> list[list[int]]:
    """The prompt ids the benchmark sends at each turn of `task`, when every reply is the true one."""
    truth = [m for m in task.messages if m["role"] == "assistant"]
    prompts = []

    def chat_fn(conversations, seeds):
        (messages,) = conversations
        prompts.append(chat_request(pipe, messages).ids)
        reply = truth[len(prompts) - 1]  # i2i: the whole canvas, given upper half included, as the pipeline's
        return [{"text": reply["content"], "images": reply["images"]}]

    _run_tasks([task], chat_fn, [0])
    return prompts


@pytest.mark.parametrize("canvas", DEFAULT_CANVASES, ids=lambda c: f"{c[0]}x{c[1]}")
@pytest.mark.parametrize("kind", OMNI_KINDS)
def test_eval_conversation_is_the_training_conversation(pipe, kind, canvas):
    layout, tokenizer = pipe.layout, pipe.text_tokenizer
    (task,) = benchmark_tasks(3, 1, *canvas, [kind])
    messages, images = task_conversation(task)
    sample = conversation_sample(
        messages, encode_images(images, pipe.image_tokenizer), tokenizer, layout, kind
    )
    ids, target = sample.ids.tolist(), sample.target
    replies = [m for m in task.messages if m["role"] == "assistant"]
    prompts = _eval_prompts(pipe, task)
    assert len(prompts) == len(replies) == len(task.turns)
    end = 0
    for turn, (prompt, reply) in enumerate(zip(prompts, replies, strict=True)):
        assert ids[: len(prompt)] == prompt, f"turn {turn}: the eval prompt differs from the training sample"
        assert not target[end : len(prompt)].any() or kind.startswith("dual_i2i")
        end = ids.index(layout.turn_sep_id, len(prompt)) + 1  # the training reply ends at the first separator
        assert target[len(prompt) : end].all(), f"turn {turn}: the reply is not all training target"
        assert layout.turn_sep_id in pipe.engine.stop_ids.tolist()  # ... where the decoder stops
        start = len(prompt) - prompt[::-1].index(layout.turn_sep_id)  # the reply's start (i2i: in the prompt)
        segments = split_response(torch.tensor(ids[start:end]), layout)
        texts = [tokenizer.decode(s.ids.tolist()) for s in segments if s.kind == "text"]
        assert "".join(texts) == reply["content"].replace("<|image|>", "")
        assert [s.kind for s in segments if s.kind != "text"] == ["image"] * reply["content"].count(
            "<|image|>"
        )
    assert end == len(ids)
    if kind == "detection":
        assert parse_box(replies[0]["content"]) == tuple(task.truth["box"])
