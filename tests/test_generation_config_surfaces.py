"""Every generation option on every surface, from one table: the Python API, `lumina-mgpt generate` and `chat`,
the HTTP API (the real app in process) and the web UI's controls accept each option with the same defaults
(the model's preset) and refuse each out-of-limit value with the same one-line error.

`TABLE` holds, per option of `GenerationConfig`, a value inside its limits (not the preset's) and values outside
them; a new option without a row fails `test_the_table_covers_every_option`. The settings each surface
resolves are read where they all meet, `LuminaMGPTPipeline.generation_config` (recorded around the real method,
whose result is then decoded as usual).
"""

import json
from dataclasses import replace

import gradio as gr
import pytest
import typer
from fastapi.testclient import TestClient
from PIL import Image
from test_generate_helpers import one_thread, ours_folder
from typer.testing import CliRunner

from lumina_mgpt.cli import app as cli_app
from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.config import OPTIONS, GenerationConfig, option, options_of
from lumina_mgpt.pipeline import LuminaMGPTPipeline
from lumina_mgpt.serve import ui
from lumina_mgpt.serve.app import create_app
from lumina_mgpt.serve.media import png_data_url
from lumina_mgpt.serve.schemas import CHAT_NAMES, ChatCompletionRequest, ImageGenerationRequest

runner = CliRunner()
PROMPT, TEXT, SIZE = "a red star", "Describe the image.", (32, 32)

# option: (a value inside the limits, values outside them)
TABLE = {
    "cfg_scale": (2.5, [-0.5, 1e4]),
    "cfg_schedule": ("reference", ["decaying"]),
    "temperature": (0.7, [0.0005, -1.0, 1e4]),
    "top_k": (5, [-1, 2**31]),
    "top_p": (0.9, [0.0, 1.5]),
    "text_temperature": (0.5, [0.0005]),
    "text_top_k": (3, [-2]),
    "text_top_p": (0.8, [1.01]),
    "force_size": (False, []),
    "max_new_tokens": (7, [0]),
    "speculative": ("reference", ["fastest"]),
    "window": (3, [0]),
    "coupling": (False, []),
    "draft_init": ("random", ["left"]),
    "nsigma": (0.5, [-1.0]),
    "best_of": (2, [0]),
    "verifier": ("caption", ["clip"]),
}
# the in-limit values, in sets that go together (v2's reference schedule is its plain path)
SPECULATIVE = ("speculative", "window", "coupling", "draft_init", "nsigma")
GROUPS = [
    [name for name in TABLE if name not in SPECULATIVE],
    [*SPECULATIVE, "max_new_tokens"],
]
BAD = [(name, value) for name, (_, values) in TABLE.items() for value in values]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):  # few positions: text-to-image with sampled sizes stays short
    return ours_folder(tmp_path_factory.mktemp("model"), max_position_embeddings=160)


@pytest.fixture(scope="module")
def pipe(folder):
    return LuminaMGPTPipeline.from_pretrained(folder)


@pytest.fixture(scope="module")
def client(pipe):
    with TestClient(create_app(pipe, ui=False)) as client:
        yield client


@pytest.fixture
def resolved(monkeypatch):
    """The configs the pipeline resolves, in order (the real method's results)."""
    seen = []
    real = LuminaMGPTPipeline.generation_config

    def record(self, use, config=None, *, with_images=False, **options):
        seen.append(real(self, use, config, with_images=with_images, **options))
        return seen[-1]

    monkeypatch.setattr(LuminaMGPTPipeline, "generation_config", record)
    return seen


def python_call(pipe, use: str, options: dict) -> None:
    if use == "t2i":
        pipe(PROMPT, *SIZE, seed=0, progress=False, **options)
    else:
        pipe.chat([{"role": "user", "content": TEXT}], *SIZE, seed=0, **options)


def cli_flags(options: dict) -> list[str]:
    """The command-line flags of options: --name-with-dashes VALUE, bools as --name / --no-name."""
    flags = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(
                {"--force-size": "--sample-size"}.get(flag, "--no-" + flag[2:]) if not value else flag
            )
        else:
            flags += [flag, str(value)]
    return flags


def cli_call(folder, tmp_path, use: str, options: dict):
    verb = ["generate", PROMPT] if use == "t2i" else ["chat", TEXT]
    args = [
        *verb,
        "--model",
        str(folder),
        "--size",
        "32x32",
        "--out",
        str(tmp_path / "out"),
        *cli_flags(options),
    ]
    return runner.invoke(cli_app, args)


def http_fields(use: str, options: dict) -> dict:
    names = CHAT_NAMES if use == "chat" else {}
    return {names.get(name, name): value for name, value in options.items()}


def http_call(client, use: str, options: dict):
    fields = http_fields(use, options)
    if use == "t2i":
        return client.post(
            "/v1/images/generations", json={"prompt": PROMPT, "size": "32x32", "seed": 0} | fields
        )
    messages = [{"role": "user", "content": TEXT}]
    return client.post(
        "/v1/chat/completions", json={"messages": messages, "size": "32x32", "seed": 0} | fields
    )


def test_the_table_covers_every_option():
    assert set(TABLE) == {o.name for o in OPTIONS}
    for name, (good, bad) in TABLE.items():
        assert option(name).check(good) == good
        for value in bad:
            with pytest.raises(LuminaError, match=f"^{name} must be .*, got {value!r}$"):
                option(name).check(value)
    assert set(GROUPS[0]) | set(GROUPS[1]) == set(TABLE)


@pytest.mark.parametrize("use", ["t2i", "chat"])
def test_every_surface_offers_every_option_of_its_use(pipe, use):
    names = {o.name for o in options_of(use)}
    command = typer.main.get_command(cli_app).commands["generate" if use == "t2i" else "chat"]
    assert names <= {p.name for p in command.params}
    schema = ImageGenerationRequest if use == "t2i" else ChatCompletionRequest
    assert set(http_fields(use, dict.fromkeys(names))) <= set(schema.model_fields)
    with gr.Blocks():
        controls = ui.option_controls(use, pipe.preset.config(use), use)
    assert set(controls) == names


@pytest.mark.parametrize("use", ["t2i", "chat"])
def test_no_option_given_means_the_presets_config_everywhere(pipe, folder, client, resolved, tmp_path, use):
    preset = pipe.preset.config(use)
    python_call(pipe, use, {})
    assert cli_call(folder, tmp_path, use, {}).exit_code == 0
    assert http_call(client, use, {}).status_code == 200
    assert len(resolved) >= 3 and all(config == preset for config in resolved)
    with gr.Blocks():
        controls = ui.option_controls(use, preset, use)
    shown = {o.name: getattr(preset, o.name) for o in options_of(use)}
    assert {name: control.value for name, control in controls.items()} == shown | (
        {"max_new_tokens": 0} if use == "chat" else {}  # an optional number's default shows as 0
    )


@pytest.mark.parametrize("group", range(len(GROUPS)))
@pytest.mark.parametrize("use", ["t2i", "chat"])
def test_every_option_given_reaches_the_decode_the_same_on_every_surface(
    pipe, folder, client, resolved, tmp_path, use, group
):
    uses = {o.name for o in options_of(use)} - ({"force_size"} if use == "t2i" else set())
    # (a random model's sampled size tokens need not fit its few positions: sampled sizes are tried in chat)
    options = {name: TABLE[name][0] for name in GROUPS[group] if name in uses}
    expected = replace(pipe.preset.config(use), **options)
    surfaces = {
        "python": lambda: python_call(pipe, use, options),
        "cli": lambda: cli_call(folder, tmp_path, use, options),
        "http": lambda: http_call(client, use, options),
    }
    for surface, call in surfaces.items():
        resolved.clear()
        result = call()
        if surface == "cli":
            assert result.exit_code == 0, result.output
        if surface == "http":
            assert result.status_code == 200, result.text
        assert resolved[0] == expected, surface
    # the UI's controls set to these values send exactly these request fields, which the API takes
    values = tuple(options.get(o.name) for o in options_of(use))
    fields = ui.request_options(use, values)
    assert fields == http_fields(use, options)
    body = (
        ui._body(ImageGenerationRequest, prompt=PROMPT, **fields)
        if use == "t2i"
        else ui._turn([], "32x32", 0, fields)
    )
    assert {name: getattr(body, name) for name in fields} == fields


@pytest.mark.parametrize(("name", "value"), BAD)
def test_an_out_of_limit_value_gets_the_same_one_line_error_everywhere(
    pipe, folder, client, tmp_path, name, value
):
    use = "t2i" if "t2i" in option(name).uses else "chat"
    with pytest.raises(LuminaError) as raised:
        python_call(pipe, use, {name: value})
    message = str(raised.value)
    assert (
        message.startswith(f"{name} must be ") and message.endswith(f"got {value!r}") and "\n" not in message
    )
    result = cli_call(folder, tmp_path, use, {name: value})
    assert (result.exit_code, result.output) == (2, f"error: {message}\n")
    reply = http_call(client, use, {name: value})
    field = http_fields(use, {name: value}).popitem()[0]
    assert reply.status_code == 400 and reply.json()["error"]["message"] == f"{field}: {message}"
    assert reply.json()["error"]["param"] == field
    spec = option(name)
    if spec.optional and value == 0:  # an optional number's control shows its default as 0: never sent
        assert field not in _ui_request(use, name, value)
    else:
        with pytest.raises(gr.Error) as shown:
            schema = ImageGenerationRequest if use == "t2i" else ChatCompletionRequest
            ui._body(schema, **_ui_request(use, name, value))
        assert shown.value.message == f"{field}: {message}"
    with gr.Blocks():
        control = ui.option_control(spec, getattr(pipe.preset.config(use), name), name)
    if spec.choices:
        assert [choice for choice, _ in control.choices] == list(spec.choices) and value not in spec.choices
    else:  # the UI's number field stops at the config's limits (0: an optional number's default)
        assert (control.minimum, control.maximum) == (0 if spec.optional else spec.minimum, spec.high)


def _ui_request(use: str, name: str, value) -> dict:
    values = tuple(value if o.name == name else None for o in options_of(use))
    base = {"prompt": PROMPT} if use == "t2i" else {"messages": [{"role": "user", "content": TEXT}]}
    return base | ui.request_options(use, values)


def test_a_config_refuses_the_reference_schedule_with_speculative_decoding_on_every_surface(
    pipe, folder, client, tmp_path
):
    options = {"cfg_schedule": "reference", "speculative": "exact"}
    with pytest.raises(LuminaError) as raised:
        python_call(pipe, "t2i", options)
    message = str(raised.value)
    with pytest.raises(LuminaError) as made:
        GenerationConfig(**options)
    assert message == str(made.value) and "\n" not in message
    assert cli_call(folder, tmp_path, "t2i", options).output == f"error: {message}\n"
    reply = http_call(client, "t2i", options)
    assert reply.status_code == 400 and reply.json()["error"]["message"] == message


def test_best_of_refuses_previews_in_one_line(pipe, client):
    with pytest.raises(
        LuminaError, match=r"^on_preview shows the rows of one drawing; use it with best_of 1$"
    ):
        pipe(PROMPT, *SIZE, best_of=2, on_preview=print, preview_rows=1, progress=False)
    reply = http_call(client, "t2i", {"best_of": 2, "stream": True})
    assert reply.status_code == 400 and "use it with best_of 1" in reply.json()["error"]["message"]


def test_a_chat_that_holds_an_image_defaults_to_the_presets_chat_with_images_on_every_surface(
    tmp_path, resolved
):
    """`sampling.json`'s "chat_with_images" (a number, a choice and a true/false option here) is the default of
    a chat holding an image in Python, the CLI and HTTP; the UI shows those options empty, naming both
    defaults, and sends nothing for them, so the server picks by the conversation."""
    per_kind = {"temperature": 0.5, "speculative": "exact", "coupling": False}
    folder = ours_folder(tmp_path / "model", max_position_embeddings=160)
    (folder / "sampling.json").write_text(json.dumps({"chat_with_images": per_kind}))
    pipe = LuminaMGPTPipeline.from_pretrained(folder)
    chat, with_images = pipe.preset.chat, pipe.preset.chat_with_images
    assert with_images == replace(chat, **per_kind) != chat
    scene = Image.new("RGB", SIZE, (200, 40, 40))
    scene.save(tmp_path / "scene.png")
    with gr.Blocks():
        controls = ui.option_controls("chat", chat, "chat", with_images)
    assert {name for name, control in controls.items() if control.value is None} == set(per_kind)
    assert controls["temperature"].label.endswith("1.0 for a chat of text alone, 0.5 for one with an image.")
    untouched = ui.request_options("chat", tuple(control.value for control in controls.values()))
    assert not set(untouched) & set(http_fields("chat", per_kind))
    assert ui.request_options("chat", tuple("false" if n == "coupling" else None for n in controls)) == {
        "coupling": False
    }
    image_part = {"type": "image_url", "image_url": {"url": png_data_url(scene)}}
    cli_args = ["chat", TEXT, "--model", str(folder), "--size", "32x32", "--max-new-tokens", "8"]
    cli_args += ["--out", str(tmp_path / "out")]
    surfaces = {
        "python": lambda images: pipe.chat(
            [{"role": "user", "content": TEXT, "images": images}], *SIZE, seed=0, max_new_tokens=8
        ),
        "cli": lambda images: runner.invoke(
            cli_app,
            [*cli_args, *(["--image", str(tmp_path / "scene.png")] if images else [])],
        ),
        "http (the UI's fields)": lambda images: client.post(
            "/v1/chat/completions",
            json={
                "messages": [{"role": "user", "content": [{"type": "text", "text": TEXT}, *images]}],
                "size": "32x32",
                "seed": 0,
            }
            | untouched
            | {"max_tokens": 8},
        ),
    }
    with TestClient(create_app(pipe, ui=False)) as client:
        for surface, call in surfaces.items():
            for images, expected in (([], chat), ([image_part if "http" in surface else scene], with_images)):
                resolved.clear()
                result = call(images)
                assert getattr(result, "exit_code", 0) == 0, result.output
                assert getattr(result, "status_code", 200) == 200, result.text
                assert resolved[-1] == replace(expected, max_new_tokens=8), (surface, bool(images))
