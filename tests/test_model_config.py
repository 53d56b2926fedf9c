"""ChameleonConfig: reading/writing HF config.json in both RoPE layouts, round trips and clear errors."""

import json

import pytest

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.model import ChameleonConfig

# The shape of a Lumina-mGPT v1 release config (transformers 4.4x era: top-level rope_theta, extra fields).
RELEASE_STYLE = {
    "architectures": ["ChameleonXLLMXForConditionalGeneration"],
    "model_type": "chameleon",
    "vocab_size": 65536,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 10240,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "rms_norm_eps": 1e-05,
    "swin_norm": False,
    "model_parallel_size": 1,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "dropout": 0.05,
    "z_loss_weight": 1e-05,
    "mask_image_logits": False,
    "hidden_act": "silu",
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocabulary_map": {"<image>": 8711, "IMGIMGBAZ": 4},
    "vq_config": {"embed_dim": 256, "num_embeddings": 8192},
}


def write(tmp_path, data) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_release_config_reads_and_round_trips(tmp_path):
    config = ChameleonConfig.from_json_file(write(tmp_path, RELEASE_STYLE))
    assert (config.hidden_size, config.head_dim, config.num_key_value_heads) == (4096, 128, 32)
    assert (config.rope_theta, config.dropout, config.z_loss_weight) == (10000.0, 0.05, 1e-05)
    assert config.extra["mask_image_logits"] is False and config.extra["vocabulary_map"]["<image>"] == 8711
    written = config.to_dict()
    for key, value in RELEASE_STYLE.items():
        if key not in ("architectures", "rope_scaling"):
            assert written[key] == value, key
    assert written["rope_parameters"] == {"rope_type": "default", "rope_theta": 10000.0}
    again = ChameleonConfig.from_json_file(write(tmp_path, json.loads(config.to_json_string())))
    assert again == config and again.to_dict() == written


def test_transformers5_config_and_defaults(tmp_path):
    transformers = pytest.importorskip("transformers")
    hf = transformers.ChameleonConfig(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=None,
        swin_norm=True,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0},
        vocabulary_map={"<image>": 3},
    )
    hf.save_pretrained(tmp_path)
    config = ChameleonConfig.from_json_file(tmp_path / "config.json")
    assert (config.rope_theta, config.swin_norm, config.num_key_value_heads) == (500.0, True, 4)
    assert (
        config.pad_token_id is None
        and config.dropout == 0.0
        and config.extra["vocabulary_map"] == {"<image>": 3}
    )
    back = transformers.ChameleonConfig(**config.to_dict())  # stock transformers reads what we write
    assert back.rope_parameters["rope_theta"] == 500.0 and back.swin_norm and back.num_key_value_heads == 4


def test_minimal_config_gets_transformers_fields():
    data = ChameleonConfig(
        vocab_size=10, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2
    ).to_dict()
    assert data["model_type"] == "chameleon" and data["vocabulary_map"] == {}
    assert data["num_key_value_heads"] == 2 and data["tie_word_embeddings"] is False


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hidden_size": None}, "missing required field 'hidden_size'"),
        ({"num_hidden_layers": "32"}, "field 'num_hidden_layers' must be an integer, got '32'"),
        ({"swin_norm": 1}, "field 'swin_norm' must be true or false"),
        ({"rms_norm_eps": "1e-5"}, "field 'rms_norm_eps' must be a number"),
        ({"eos_token_id": [2, "x"]}, "field 'eos_token_id' must be an integer, a list of integers or null"),
        ({"num_key_value_heads": 5}, "num_attention_heads 32 is not a multiple of num_key_value_heads 5"),
        ({"hidden_size": 4000}, "hidden_size 4000 does not split into 32 heads"),
        ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "only default \\(unscaled\\) RoPE"),
        ({"dropout": 1.5}, "field 'dropout' must be in \\[0, 1\\)"),
        ({"hidden_act": "gelu"}, "hidden_act 'gelu' is not supported"),
    ],
)
def test_bad_fields_name_file_and_field(tmp_path, change, message):
    data = {k: v for k, v in (RELEASE_STYLE | change).items() if v is not None or k not in change}
    path = write(tmp_path, data)
    with pytest.raises(LuminaError, match=f"^{path}: {message}"):
        ChameleonConfig.from_json_file(path)


def test_unreadable_config_files(tmp_path):
    with pytest.raises(LuminaError, match=r"config\.json: file not found"):
        ChameleonConfig.from_json_file(tmp_path / "config.json")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(LuminaError, match=r"config\.json: invalid JSON"):
        ChameleonConfig.from_json_file(tmp_path / "config.json")
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(LuminaError, match=r"config\.json: expected a JSON object"):
        ChameleonConfig.from_json_file(tmp_path / "config.json")
