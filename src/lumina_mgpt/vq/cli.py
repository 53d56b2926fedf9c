"""Command functions of the VQ verbs; `lumina_mgpt.cli` registers them (`reconstruct`, `train-vq`)."""

from pathlib import Path
from typing import Annotated

import typer
from PIL import Image, UnidentifiedImageError

from lumina_mgpt.errors import LuminaError

MAX_SIDE = 2048  # images over MAX_SIDE² pixels are fitted with --area first (the VQ runs at full resolution)


def reconstruct(
    image: Annotated[Path, typer.Argument(help="Input image (any format PIL reads).")],
    output: Annotated[
        Path, typer.Argument(help="Where to write the reconstruction (format from the suffix).")
    ],
    model: Annotated[
        str | None,
        typer.Option(
            help="Tokenizer: folder (or a model folder with vq/), checkpoint file or hub repo id; default the "
            "shapes VQ."
        ),
    ] = None,
    area: Annotated[
        int | None,
        typer.Option(
            min=32,
            max=MAX_SIDE,
            help="Fit the image to the bucket of about AREA² pixels first (centre crop).",
        ),
    ] = None,
) -> None:
    """Encode an image to VQ codes and decode it back; print the code grid."""
    from lumina_mgpt.vq.images import fit_to_bucket
    from lumina_mgpt.vq.loading import SHAPES_TOKENIZER, load_image_tokenizer

    _check_output(image, output)
    try:
        picture = Image.open(image)
        picture.load()
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise LuminaError(f"{image}: cannot read the image ({type(e).__name__})") from None
    if area is not None:
        picture = fit_to_bucket(picture, area)
    elif picture.width * picture.height > MAX_SIDE**2:
        raise LuminaError(
            f"{image}: {picture.width}x{picture.height} is over {MAX_SIDE}² pixels; pass --area to fit it smaller"
        )
    tokenizer = load_image_tokenizer(model or SHAPES_TOKENIZER)
    f = tokenizer.factor
    width, height = picture.width // f * f, picture.height // f * f
    if not width or not height:
        raise LuminaError(
            f"{image}: {picture.width}x{picture.height} is smaller than one {f}x{f} latent cell"
        )
    left, top = (picture.width - width) // 2, (picture.height - height) // 2
    picture = picture.crop((left, top, left + width, top + height))
    codes = tokenizer.encode_image(picture)
    tokenizer.decode_image(codes).save(output)
    print(
        f"{width}x{height} px -> grid {codes.shape[0]}x{codes.shape[1]} ({codes.numel()} codes) -> {output}"
    )


def _check_output(image: Path, output: Path) -> None:
    """Refuse, before any work, an output that would overwrite the input or cannot be written as an image."""
    if output.exists() and image.exists() and output.resolve() == image.resolve():
        raise LuminaError(f"{output} is the input image; choose another output path")
    if output.is_dir():
        raise LuminaError(f"{output} is a folder; give a file name, e.g. {output / 'reconstruction.png'}")
    if output.suffix.lower() not in Image.registered_extensions():
        raise LuminaError(f"{output}: no image format has the suffix {output.suffix!r} (use e.g. .png)")
    if not output.parent.is_dir():
        raise LuminaError(f"{output.parent} is not an existing folder")


def train_vq(
    config: Annotated[Path, typer.Argument(help="Training config (YAML), e.g. configs/vq/shapes.yaml.")],
    out: Annotated[Path, typer.Option(help="Output folder (resumes from its checkpoint.pt if present).")],
    steps: Annotated[int | None, typer.Option(help="Override optim.steps.")] = None,
    device: Annotated[str | None, typer.Option(help="Override run.device (auto, cpu, cuda).")] = None,
) -> None:
    """Train a small VQ image tokenizer on the shapes world."""
    from lumina_mgpt.vq.train import TrainConfig, train

    cfg = TrainConfig.from_yaml(config)
    if steps is not None:
        cfg.optim.steps = steps
    if device is not None:
        cfg.run.device = device
    metrics = train(cfg, out)
    print(f"tokenizer written to {out / 'tokenizer'}")
    for canvas, report in metrics.get("eval", {}).items():
        print(canvas, " ".join(f"{k}={v:.4g}" for k, v in report.items()))
