"""The web UI in a real browser (Chromium + Playwright), one session: no invalid default field on any tab,
every task preset fills its exact message, runs and shows its output (checked on a screenshot) with download
links, and the chat answers a follow-up turn on the latest image."""

import io

import numpy as np
import pytest
from PIL import Image
from test_generate_helpers import image_replies_folder, one_thread
from test_serve_app import real_browser

from lumina_mgpt.serve.launch import server_process
from lumina_mgpt.serve.presets import SHAPES_PRESETS, V1_PRESETS, V2_PRESETS, draws_from_words, example_image


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    folder = image_replies_folder(tmp_path_factory.mktemp("ui") / "tiny-shapes")  # every reply draws an image
    with server_process(
        "--model", str(folder), "--log-level", "warning", env={"OMP_NUM_THREADS": "1"}
    ) as url:
        yield url


def invalid_fields(page) -> int:
    return page.locator(":invalid, [aria-invalid=true]").count()


@pytest.mark.slow
def test_every_preset_runs_and_shows_its_output_in_a_real_browser(url, tmp_path):
    with real_browser(tmp_path / "profile", 1000) as browser:
        page = browser.new_page()
        page.goto(f"{url}/ui/")
        page.locator("#prompt textarea").wait_for(timeout=60_000)
        assert invalid_fields(page) == 0
        page.get_by_role("tab", name="Chat").click()
        page.get_by_role("button", name="Settings ▼").click()
        page.get_by_text("Reply length limit").wait_for()
        assert invalid_fields(page) == 0
        page.get_by_role("tab", name="Tasks").click()
        page.locator("#task-message textarea").wait_for()
        assert invalid_fields(page) == 0
        page.locator("#task-size input").click()
        page.get_by_role("option", name="64x64", exact=True).click()  # quick drafts
        for preset in SHAPES_PRESETS:
            page.locator("#task-preset input").click()
            page.get_by_role("option", name=preset.name, exact=True).click()
            message = page.locator("#task-message textarea")
            expected = preset.message(64, 64)
            page.wait_for_function(
                "([sel, text]) => document.querySelector(sel).value === text",
                arg=["#task-message textarea", expected],
            )
            assert message.input_value() == expected
            page.locator("#task-run").click()
            page.locator("#task-status").get_by_text(f"Done: {preset.name}:").wait_for(timeout=60_000)
            drawn = int(page.locator("#task-status").inner_text().split(":")[-1].split()[0])
            assert drawn >= (preset.frames if preset.task == "frames" else 1), preset.name
            assert page.locator("#task-gallery img").count() >= drawn
            gallery = page.locator("#task-gallery")
            gallery.locator("img").first.wait_for()
            shot = np.asarray(Image.open(io.BytesIO(gallery.screenshot())).convert("RGB"))
            colours = len(np.unique(shot.reshape(-1, 3), axis=0))
            assert colours > 20, f"{preset.name}: the output area shows {colours} colours"
            assert page.locator("#task-files a").count() >= 1  # a download link per file
            assert invalid_fields(page) == 0, preset.name
        # an example of the gallery fills its preset
        examples = page.locator("#task-examples img")
        examples.nth(3).click()
        name = page.locator("#task-preset input").input_value()
        preset = next(p for p in SHAPES_PRESETS if p.name == name)
        page.wait_for_function(
            "([sel, text]) => document.querySelector(sel).value === text",
            arg=["#task-message textarea", preset.message(64, 64)],
        )
        # the chat: an edit on an upload, then a question about the latest image without re-uploading
        Image.fromarray(example_image("scene", 64, 64)).save(tmp_path / "scene.png")
        page.get_by_role("tab", name="Chat").click()
        page.locator("#chat-input input[type=file]").set_input_files(tmp_path / "scene.png")
        page.locator("#chat-input textarea").fill("Remove the blue circle.")
        page.locator("#chat-input textarea").press("Enter")
        page.locator("#chatbot img").nth(1).wait_for(timeout=60_000)  # the upload, then the edit
        page.locator("#chat-input textarea").fill("Describe the image.")
        page.locator("#chat-input textarea").press("Enter")
        page.locator("#chatbot img").nth(2).wait_for(timeout=60_000)
        page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)


def test_presets_fill_the_exact_task_messages():
    by_name = {p.name: p for p in SHAPES_PRESETS}
    assert by_name["Segmentation"].message(96, 64) == "Semantic segmentation. <|image|>"
    assert by_name["Detection"].message(96, 64) == "Detect: the blue circle. <|image|>"
    assert by_name["Colour QA"].message(96, 64) == "What colour is the square? <|image|>"
    assert by_name["Frames"].message(96, 64) == (
        "Generate 2 frames of 96x64 in which everything moves to the right:\na red square"
    )
    assert by_name["Dual panel: edges → image"].message(64, 128) == (
        "Generate a dual-panel image of 64x128 where the <upper half> displays a <edge map>, while the "
        "<lower half> retains the original image for direct visual comparison:\na red square and a blue circle"
    )
    assert {p.task for p in SHAPES_PRESETS} == {
        "t2i",
        "edit",
        "segmentation",
        "edges",
        "detect",
        "condition",
        "qa",
        "caption",
        "frames",
        "pair",
        "i2i",
    }
    assert {p.task for p in V1_PRESETS} >= {"segmentation", "depth", "normals", "pose", "detect", "condition"}
    assert {p.task for p in V2_PRESETS} == {"t2i", "pair", "i2i"}
    assert draws_from_words(by_name["Text to image"].message(64, 64)) and draws_from_words(
        by_name["Frames"].message(64, 64)
    )
    assert not draws_from_words("Describe the image.") and not draws_from_words(
        by_name["Edge map to image"].message(64, 64)
    )
