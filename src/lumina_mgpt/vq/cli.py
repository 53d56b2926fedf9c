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
    import numpy as np

    from lumina_mgpt.vq.evaluate import psnr
    from lumina_mgpt.vq.images import fit_to_bucket, to_rgb
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
    recon = tokenizer.decode_image(codes)
    recon.save(output)
    quality = psnr(np.asarray(to_rgb(picture)), np.asarray(recon))
    print(
        f"{width}x{height} px -> grid {codes.shape[0]}x{codes.shape[1]} ({codes.numel()} codes) -> {output}, "
        f"PSNR {quality:.2f} dB"
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
    config: Annotated[
        Path | None,
        typer.Argument(help="Training config (YAML), e.g. configs/vq/shapes.yaml; default: --preset's."),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Output folder (resumes from its checkpoint.pt if present).")
    ] = Path("runs/vq"),
    images: Annotated[
        Path | None,
        typer.Option(help="Train on this folder of images (random crops/resizes to the buckets)."),
    ] = None,
    preset: Annotated[
        str, typer.Option(help="Model and schedule without a CONFIG: 'small' (CPU-sized) or 'tiny' (tests).")
    ] = "small",
    minutes: Annotated[
        float | None,
        typer.Option(min=0.0, help="Checkpoint, write the tokenizer and stop after this many minutes."),
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Override optim.steps.")] = None,
    device: Annotated[str | None, typer.Option(help="Override run.device (auto, cpu, cuda).")] = None,
) -> None:
    """Train a small VQ image tokenizer (f8, spatial-norm decoder) on a folder of images or the shapes world."""
    from lumina_mgpt.vq.train import PRESETS, TrainConfig, train

    if config is not None:
        cfg = TrainConfig.from_yaml(config)
    elif preset in PRESETS:
        cfg = TrainConfig.from_dict(PRESETS[preset], f"--preset {preset}")
    else:
        raise LuminaError(f"--preset {preset!r} is not one of {sorted(PRESETS)}")
    if images is not None:
        cfg.data.images = str(images)
    if config is None and cfg.data.images is None:
        raise LuminaError("give --images DIR (a folder of training images) or a CONFIG")
    if steps is not None:
        cfg.optim.steps = steps
    if device is not None:
        cfg.run.device = device
    if minutes is not None:
        cfg.run.minutes = minutes
    metrics = train(cfg, out)
    print(f"tokenizer written to {out / 'tokenizer'} after {metrics['steps']} steps")
    for name, report in metrics.get("eval", {}).items():
        if isinstance(report, dict):
            print(name, " ".join(f"{k}={v:.4g}" for k, v in report.items()))
        else:
            print(f"{name}={report:.2f} dB")
