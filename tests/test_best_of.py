"""Best-of-N on a tiny model folder: the kept image is each slot's best candidate under a pluggable verifier; the
self-verifier's scores equal log-likelihoods computed directly from full forwards (both methods), batched or
not; bad verifier output and options are refused."""

import numpy as np
import pytest
import torch
from test_generate_helpers import one_thread, ours_folder

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.best_of import SelfVerifier, select_best
from lumina_mgpt.pipeline import LuminaMGPTPipeline
from lumina_mgpt.text import IGNORE_INDEX, IMAGE_PLACEHOLDER, serialize
from lumina_mgpt.unirep import t2i_prompt

PROMPTS = ["a red star", "two blue circles"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return LuminaMGPTPipeline.from_pretrained(ours_folder(tmp_path_factory.mktemp("ours")))


def brightness(images, prompts):
    return [float(np.asarray(image, dtype=np.float64).mean()) for image in images]


def test_best_of_keeps_the_highest_scoring_candidate_of_each_image(pipe):
    per_prompt, n = 2, 3
    everything = pipe(PROMPTS, 64, 32, per_prompt * n, cfg_scale=2.0, seed=5, progress=False)
    seen = []

    def verifier(images, prompts):
        seen.append(list(prompts))
        return brightness(images, prompts)

    best = pipe(
        PROMPTS, 64, 32, per_prompt, cfg_scale=2.0, seed=5, progress=False, best_of=n, verifier=verifier
    )
    assert seen == [[p for p in PROMPTS for _ in range(per_prompt * n)]]
    scores = torch.tensor(brightness(everything.images, None)).view(-1, n)
    chosen = (scores.argmax(-1) + n * torch.arange(len(scores))).tolist()
    assert [t.tolist() for t in best.tokens] == [everything.tokens[i].tolist() for i in chosen]
    assert best.scores == pytest.approx(scores.max(-1).values.tolist())
    assert len(best.images) == len(PROMPTS) * per_prompt and best.stats["candidates"] == n


def direct_logprob(model, ids: torch.Tensor, mask: torch.Tensor) -> float:
    """Σ log p(ids[t] | ids[<t]) over masked t, from one full forward and a full log-softmax."""
    with torch.no_grad():
        logprobs = model(ids[None])[0].log_softmax(-1)
    picked = logprobs[:-1].gather(-1, ids[1:, None])[:, 0]
    return float(picked[mask[1:]].double().sum())


def test_self_verifier_scores_equal_direct_log_likelihoods(pipe):
    out = pipe(PROMPTS, 64, 32, 2, cfg_scale=2.0, seed=1, progress=False)
    prompts = [p for p in PROMPTS for _ in range(2)]
    layout, model = pipe.layout, pipe.transformer
    pmi, caption = [], []
    for block, prompt in zip(out.tokens, prompts, strict=True):
        user = [{"role": "user", "content": t2i_prompt(prompt, 64, 32)}]
        ids, _ = serialize(user, pipe.text_tokenizer, layout, response_prefix=block)
        codes = layout.code_of(block) >= 0
        cond_mask = torch.cat([torch.zeros(len(ids) - len(block), dtype=torch.bool), codes])
        pmi.append(direct_logprob(model, ids, cond_mask) - direct_logprob(model, block, codes))
        messages = [
            {"role": "user", "content": f"{IMAGE_PLACEHOLDER} Describe the image.", "images": [block]},
            {"role": "assistant", "content": prompt},
        ]
        ids, labels = serialize(messages, pipe.text_tokenizer, layout)
        caption.append(direct_logprob(model, ids, labels != IGNORE_INDEX))
    for method, expected in (("pmi", pmi), ("caption", caption)):
        for batch_size in (1, 3):
            scores = SelfVerifier(pipe, method, batch_size=batch_size).score_blocks(out.tokens, prompts)
            assert scores.tolist() == pytest.approx(expected, abs=1e-3)
    assert len(set(pmi)) == len(pmi)  # the candidates differ


def test_self_verifier_reads_images_and_drives_best_of(pipe):
    out = pipe(PROMPTS[0], 64, 32, 1, seed=2, progress=False, best_of=2)
    assert len(out.images) == 1 and len(out.scores) == 1 and np.isfinite(out.scores[0])
    scores = SelfVerifier(pipe)(out.images, PROMPTS[:1])
    assert scores.shape == (1,) and scores.isfinite().all()


def test_bad_verifiers_and_options_are_refused(pipe):
    with pytest.raises(LuminaError, match="4 finite scores"):
        pipe(PROMPTS[0], 64, 32, 2, seed=0, progress=False, best_of=2, verifier=lambda images, prompts: [1.0])
    with pytest.raises(LuminaError, match="finite"):
        pipe(
            PROMPTS[0],
            64,
            32,
            1,
            seed=0,
            progress=False,
            best_of=2,
            verifier=lambda i, p: [0.0, float("nan")],
        )
    with pytest.raises(LuminaError, match="best_of"):
        select_best(lambda k: None, PROMPTS, 1, 0, brightness)
    with pytest.raises(LuminaError, match="method"):
        SelfVerifier(pipe, "clip")
