"""Small real objects shared by the generation and pipeline tests (no tests here): a token layout with a tiny
vocabulary, tiny random Chameleon transformers and VQ tokenizers, and model folders in our layout and in the
v1 / v2 release layouts."""

from collections.abc import Iterator
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from lumina_mgpt.model import ChameleonConfig, ChameleonTransformer, save_transformer
from lumina_mgpt.text import build_text_tokenizer
from lumina_mgpt.vocab import TokenLayout, size_token_name, v1_image_token_name
from lumina_mgpt.vq import ImageTokenizer, TamingConfig, load_image_tokenizer, save_image_tokenizer
from lumina_mgpt.vq.keymap import to_release

# ids: 0 <s>, 1 </s>, 2 <pad>, 3 turn separator, 4 image start, 5 image end, 6 end-of-line,
# 7..14 size tokens n = 1..8, 15..46 image codes 0..31, 47..79 text
VOCAB, CODEBOOK, MAX_UNITS = 80, 32, 8
TEXT_IDS = list(range(47, VOCAB))


def tiny_layout(max_units: int = MAX_UNITS) -> TokenLayout:
    sizes = torch.tensor([-1, *range(7, 7 + max_units)])
    return TokenLayout(
        name="ours",
        vocab_size=VOCAB,
        bos_id=0,
        turn_sep_id=3,
        stop_ids=(3,),
        image_start_id=4,
        image_end_id=5,
        eol_id=6,
        latent_factor=8,
        image_token_ids=torch.arange(15, 15 + CODEBOOK),
        size_token_ids=sizes,
    )


def tiny_model(seed: int = 0, vocab: int = VOCAB, **overrides) -> ChameleonTransformer:
    """A 2-layer random transformer whose logits spread enough for sampling and guidance to matter."""
    torch.manual_seed(seed)
    fields = dict(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        initializer_range=0.3,
    )
    model = ChameleonTransformer(ChameleonConfig(**(fields | overrides)))
    model.init_weights()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "_norm." in name:  # q/k norms and RMSNorms: random, not ones/zeros
                param.copy_(
                    1 + 0.3 * torch.randn_like(param)
                    if name.endswith("weight")
                    else 0.3 * torch.randn_like(param)
                )
    return model.eval()


def favour_token(model: ChameleonTransformer, token: int, margin: float = 100.0) -> None:
    """Make `token` the most likely next token wherever it is allowed: hidden dimension 0 of the final
    norm output becomes a positive constant direction and `token`'s lm_head row reads it."""
    with torch.no_grad():
        for layer in model.model.layers:  # nothing writes residual dimension 0 ...
            layer.self_attn.o_proj.weight[0] = 0
            layer.mlp.down_proj.weight[0] = 0
        model.model.embed_tokens.weight[:, 0] = 1.0  # ... so it is 1 for every token
        model.lm_head.weight[:, 0] = 0
        model.model.norm.weight[0] = 1.0
        model.lm_head.weight[token, 0] = margin


def one_thread() -> Iterator[None]:
    """Body of a module fixture: run torch on one thread (tiny models on a shared 2-core machine are much
    slower with two competing threads), then restore the setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------- model folders on disk

CAPTIONS = [
    "a photo of a red star",
    "two blue circles and a green square",
    "Semantic segmentation.",
    "Describe the image.",
    "Generate an image of 64x32 according to the following prompt:\n",
] * 4


def tiny_vq(levels: int = 4, codebook: int = 32, seed: int = 0) -> ImageTokenizer:
    """A random group-norm VQ of factor 2**(levels - 1) with narrow channels."""
    torch.manual_seed(seed)
    blocks = levels
    return ImageTokenizer.from_config(
        dict(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * blocks,
            up_block_types=("UpDecoderBlock2D",) * blocks,
            block_out_channels=(8,) * blocks,
            layers_per_block=1,
            latent_channels=4,
            num_vq_embeddings=codebook,
            vq_embed_dim=4,
            norm_num_groups=4,
            norm_type="group",
        )
    ).eval()


def ours_folder(folder: Path, codebook: int = 32, max_units: int = 8, seed: int = 0, **model_fields) -> Path:
    """Our folder layout: config.json, model.safetensors and tokenizer.json at the root, the VQ in vq/."""
    tokenizer = build_text_tokenizer(CAPTIONS, 8 + max_units + codebook + 256 + 40, codebook, max_units)
    tokenizer.save(folder)
    save_transformer(tiny_model(seed, vocab=tokenizer.vocab_size, **model_fields), folder)
    save_image_tokenizer(tiny_vq(codebook=codebook, seed=seed), folder / "vq")
    return folder


def image_replies_folder(folder: Path) -> Path:
    """`ours_folder` whose model favours the image start token wherever it is allowed, so chat replies are
    images (deterministic); text-to-image is unaffected (no image start inside a grid). Chats that hold an
    image sample image tokens at temperature 0.5 (`sampling.json`), so a surface that misses the preset's
    `chat_with_images` answers differently from the pipeline."""
    from lumina_mgpt.pipeline import LuminaMGPTPipeline

    ours_folder(folder)
    (folder / "sampling.json").write_text('{"chat_with_images": {"temperature": 0.5}}')
    pipe = LuminaMGPTPipeline.from_pretrained(folder)
    favour_token(pipe.transformer, pipe.layout.image_start_id)
    save_transformer(pipe.transformer, folder)
    return folder


def word_level_tokenizer(names: dict[int, str], vocab_size: int, file: Path) -> Path:
    """A tokenizers WordLevel file with `names` at their ids and filler names elsewhere."""
    vocab = {names.get(i, f"<filler{i}>"): i for i in range(vocab_size)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece()  # joins words with spaces
    tokenizer.add_special_tokens([n for n in names.values() if n.startswith("<")])
    tokenizer.save(str(file))
    return file


WORDS = ["a", "photo", "of", "red", "star", "Generate", "an", "image", "yes", "no", "."]


def v1_folders(root: Path, codebook: int = 32, max_units: int = 4) -> tuple[Path, Path, Path]:
    """A v1 release set: the HF model folder, `text_tokenizer.json` with IMGIMG names, and a Chameleon VQGAN
    folder (`vqgan.yaml` + `vqgan.ckpt` under release names). Returns (model, tokenizer file, VQ folder)."""
    names = {0: "<s>", 1: "<pad>", 2: "</s>", 3: "<unk>"}
    names |= {4 + k: v1_image_token_name(k) for k in range(codebook)}
    specials = ["<eoss>", "<racm3:break>", "<reserved08706>", "<reserved08799>"]
    specials += [size_token_name(n) for n in range(1, max_units + 1)]
    names |= {4 + codebook + i: name for i, name in enumerate(specials + WORDS)}
    vocab = 4 + codebook + len(specials) + len(WORDS)
    root.mkdir(parents=True, exist_ok=True)
    tokenizer = word_level_tokenizer(names, vocab, root / "text_tokenizer.json")
    save_transformer(tiny_model(4, vocab=vocab), root / "model")
    config = TamingConfig(
        ch=32,
        ch_mult=(1, 1, 1, 1, 1),
        num_res_blocks=1,
        attn_resolutions=(),
        resolution=64,
        z_channels=4,
        embed_dim=4,
        n_embed=codebook,
        spatial_norm=False,
    )
    vq = ImageTokenizer.from_config(config.vqmodel_kwargs())
    (root / "vq").mkdir()
    (root / "vq" / "vqgan.yaml").write_text(
        "model:\n  params:\n"
        f"    embed_dim: 4\n    n_embed: {codebook}\n    ddconfig:\n      double_z: false\n      z_channels: 4\n"
        "      resolution: 64\n      in_channels: 3\n      out_ch: 3\n      ch: 32\n      ch_mult: [1, 1, 1, 1, 1]\n"
        "      num_res_blocks: 1\n      attn_resolutions: []\n      dropout: 0.0\n"
    )
    torch.save({"state_dict": to_release(vq.vq)}, root / "vq" / "vqgan.ckpt")
    return root / "model", tokenizer, root / "vq"


V2_VOCAB = 171385


def v2_folders(root: Path, max_units: int = 4) -> tuple[Path, Path, ImageTokenizer]:
    """A v2 release set: the HF model folder (vocabulary 171,385), its tokenizer file with the release's ids,
    and a MoVQ-layout checkpoint (16,384 codes) loaded through the release loader. Returns (model, tokenizer
    file, image tokenizer)."""
    layout = TokenLayout.v2()
    names = {
        layout.bos_id: "<|endoftext|>",
        layout.image_start_id: "<racm3:break>",
        layout.image_end_id: "<eoss>",
        layout.eol_id: "<reserved08799>",
        layout.turn_sep_id: "<reserved08706>",
        151667: "<reserved08796>",
        151668: "<reserved08797>",
        151669: "<reserved08798>",
        0: "<unk>",
    }
    names |= {int(layout.size_token_ids[n]): size_token_name(n) for n in range(1, max_units + 1)}
    names |= {155000 + k: f"<MOVQGAN_{k}>" for k in range(16384)}
    names |= {100 + i: word for i, word in enumerate(WORDS)}
    root.mkdir(parents=True, exist_ok=True)
    tokenizer = word_level_tokenizer(names, V2_VOCAB, root / "tokenizer.json")
    save_transformer(tiny_model(5, vocab=V2_VOCAB, hidden_size=16, intermediate_size=32), root / "model")
    config = TamingConfig(
        ch=32,
        ch_mult=(1, 1, 1, 1),
        num_res_blocks=1,
        attn_resolutions=(),
        resolution=32,
        z_channels=4,
        embed_dim=4,
        n_embed=16384,
        spatial_norm=True,
    )
    torch.manual_seed(5)
    vq = ImageTokenizer.from_config(config.vqmodel_kwargs())
    torch.save(to_release(vq.vq), root / "movqgan_tiny.ckpt")  # flat state dict, as released
    return root / "model", tokenizer, load_image_tokenizer(root / "movqgan_tiny.ckpt", release_config=config)
