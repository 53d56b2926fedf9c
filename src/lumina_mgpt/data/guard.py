"""Guard rail before tokenising a data set: does the image tokenizer reconstruct these images at all?

An image tokenizer only reproduces what it was trained on (the shipped one knows the shapes world's palette;
photos come back as coloured noise, and a model trained on those codes draws noise). Before any work, the
PSNR of a sample of the records' images is measured and compared with the figure the tokenizer reached on its
own training data (`training.json` beside its weights); far below it, the data is refused.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lumina_mgpt.data.pretokenize import load_image, record_image_paths
from lumina_mgpt.errors import LuminaError
from lumina_mgpt.vq.evaluate import psnr, reconstruct
from lumina_mgpt.vq.tokenizer import ImageTokenizer
from lumina_mgpt.vq.train import TRAINING_FILE

SAMPLE_IMAGES = 16
MARGIN_DB = 10.0  # refused more than this far below the tokenizer's own figure (10x its error power)


@dataclass(frozen=True)
class FitReport:
    """The measured PSNR (dB) of `images` sampled images and the tokenizer's own figure (None: unknown)."""

    psnr: float
    images: int
    reference: float | None

    @property
    def refused(self) -> bool:
        return self.reference is not None and self.psnr < self.reference - MARGIN_DB

    def line(self) -> str:
        own = "no figure of its own" if self.reference is None else f"{self.reference:.1f} dB on its own data"
        return f"image tokenizer: {self.psnr:.1f} dB PSNR on {self.images} sampled images ({own})"


def reference_psnr(image_tokenizer: str | os.PathLike) -> float | None:
    """The PSNR the tokenizer at `image_tokenizer` (its folder, or a model folder with `vq/`) reached on its
    training data, from its `training.json`; None when there is none."""
    folder = Path(image_tokenizer)
    folder = folder / "vq" if (folder / "vq").is_dir() else folder
    file = folder / TRAINING_FILE
    if not file.is_file():
        return None
    try:
        return float(json.loads(file.read_text(encoding="utf-8"))["psnr"])
    except (ValueError, KeyError, TypeError):
        raise LuminaError(f'{file}: expected {{"psnr": dB}}; fix or delete it') from None


def measure_fit(
    records: str | os.PathLike, image_tokenizer: ImageTokenizer, area: int, reference: float | None
) -> FitReport | None:
    """The reconstruction PSNR of up to `SAMPLE_IMAGES` images spread over `records` (fitted to `area`'s
    buckets, as pre-tokenisation does); None when the records name no readable image."""
    records = Path(records)
    try:
        paths = record_image_paths(records)
    except (OSError, UnicodeDecodeError):
        return None  # pre-tokenisation names the problem
    spread = np.linspace(0, len(paths) - 1, min(SAMPLE_IMAGES, len(paths))).round().astype(int)
    picks = [paths[i] for i in sorted(set(spread.tolist()))]
    errors, count = [], 0
    for path in picks:
        try:
            image = np.array(load_image(records.parent, path, area))[None]
        except LuminaError:  # pre-tokenisation reports and skips it
            continue
        recon, _ = reconstruct(image_tokenizer, image)
        errors.append(10 ** (-psnr(image, recon) / 10))
        count += 1
    if not count:
        return None
    return FitReport(float(-10 * np.log10(max(np.mean(errors), 1e-20))), count, reference)


def check_fit(report: FitReport | None, image_tokenizer: str, force: bool) -> str:
    """The line to print about the tokenizer's fit; a LuminaError naming the figure and the fix when it is
    refused (unless `force`)."""
    if report is None:
        return "image tokenizer: no readable image in the records to check it on"
    if report.refused and not force:
        raise LuminaError(
            f"the image tokenizer {image_tokenizer} reconstructs these images at {report.psnr:.1f} dB PSNR, far "
            f"below the {report.reference:.1f} dB it reaches on its own training data: a model trained on its "
            "codes would draw noise. Train one on your images (lumina-mgpt train-vq --images DIR --out VQ, "
            "then --image-tokenizer VQ), or pass --force"
        )
    return report.line() + (" -- below its own figure; going on (--force)" if report.refused else "")
