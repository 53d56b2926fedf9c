"""Seconds per image and peak memory of a Lumina-mGPT 2.0-shaped model (7.9B parameters, 768x768 = 9,316
tokens) with random bfloat16 weights, in one run: plain and exact speculative decoding, with bfloat16, int8 and
int4 weights, each eager and with the compiled step (CUDA graphs on a GPU).

    python bench/gpu.py                  # one GPU; --rows 8 times the first 8 latent rows and scales up
    python bench/gpu.py --tiny           # a small model of the same layout on CPU (checks the script runs)

The prompt is random text; decoding uses the v2 settings (CFG 4, image top-k 4096) through our engine (batched
CFG, preallocated KV cache). Random weights give flat distributions, so drafts are rarely accepted: the
speculative row measures the cost of a window forward, and `projected` gives seconds per image at the
acceptance published for SJD (k = 2.2) and coupled SJD (k = 4.2) on real models: image tokens / k window
forwards. Peak memory is `torch.cuda.max_memory_allocated` (weights, KV cache and activations). Every
measurement follows an untimed run of the same shape (the compiled step compiles once per call shape).
"""

import argparse

import torch

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.engine import DecodeEngine, DecodeSettings
from lumina_mgpt.generate.sampling import SamplingSettings
from lumina_mgpt.generate.speculative import SpeculativeSettings
from lumina_mgpt.model import ChameleonConfig, ChameleonTransformer
from lumina_mgpt.model.quantize import quantize_weights
from lumina_mgpt.unirep import block_length
from lumina_mgpt.vocab import TokenLayout

V2_7B = dict(
    vocab_size=171385,
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    max_position_embeddings=10240,
)
TINY = V2_7B | dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4)
PUBLISHED_K = (2.2, 4.2)


def build(fields: dict, device: str, dtype: torch.dtype) -> ChameleonTransformer:
    """Random weights made on the device (no host copy of 16 GB)."""
    with torch.device("meta"):
        model = ChameleonTransformer(ChameleonConfig(**fields)).to(dtype)
    model.to_empty(device=device)
    model.init_weights()
    return model.eval()


def time_image(
    engine: DecodeEngine, prompt: list[int], canvas: int, rows: int, speculative: SpeculativeSettings | None
) -> dict:
    """Decode the first `rows` latent rows of a `canvas`² image; seconds scaled to the whole image."""
    layout, device = engine.layout, engine.device
    full = block_length(canvas, canvas, layout) - 1
    columns = canvas // layout.latent_factor
    budget = min(full, 2 + rows * (columns + 1))
    settings = DecodeSettings(
        image=SamplingSettings(1.0, 4096),
        cfg_scale=4.0,
        max_new_tokens=budget,
        stop_at_image_end=True,
        speculative=speculative,
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    result = engine.generate([prompt], settings, [0], [(canvas, canvas)])
    if device.type == "cuda":
        torch.cuda.synchronize()
    stats = result.stats
    per_forward = stats["seconds"] / stats["forward_passes"]
    return {
        "seconds_per_image": stats["seconds"] * full / stats["generated_tokens"],
        "ms_per_forward": 1000 * per_forward,
        "tokens_per_forward": stats["accepted_per_forward"],
        "projected": [full / k * per_forward for k in PUBLISHED_K] if speculative else None,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan"),
    }


def report(name: str, row: dict) -> None:
    line = (
        f"{name:<30} {row['seconds_per_image']:8.1f} s/image  {row['ms_per_forward']:7.2f} ms/forward  "
        f"{row['tokens_per_forward']:4.2f} tok/forward  peak {row['peak_gib']:5.1f} GiB"
    )
    if row["projected"]:
        line += "  projected " + ", ".join(
            f"{s:.1f} s at k={k}" for s, k in zip(row["projected"], PUBLISHED_K, strict=True)
        )
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model of the v2 layout, CPU float32")
    parser.add_argument("--canvas", type=int, default=None, help="square side in px (768; --tiny: 32)")
    parser.add_argument("--rows", type=int, default=None, help="latent rows to time (default: all; --tiny: 1)")
    parser.add_argument("--window", type=int, default=16)
    args = parser.parse_args()
    device = "cpu" if args.tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device; run with --tiny on CPU")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    canvas = args.canvas or (32 if args.tiny else 768)
    rows = args.rows or (1 if args.tiny else canvas // 8)
    torch.manual_seed(0)
    model = build(TINY if args.tiny else V2_7B, device, dtype)
    layout = TokenLayout.v2()
    prompt = [
        layout.bos_id,
        *torch.randint(100, 150000, (40,)).tolist(),
        layout.turn_sep_id,
        layout.image_start_id,
    ]
    params = sum(p.numel() for p in model.parameters()) / 1e9
    print(
        f"{params:.2f}B parameters, {dtype}, {device}; {canvas}x{canvas} = "
        f"{block_length(canvas, canvas, layout)} tokens; timing {rows} latent rows, window {args.window}; "
        f"compiled: torch.compile{' + CUDA graphs' if device == 'cuda' else ''}"
    )
    spec = SpeculativeSettings(window=args.window)
    for weights in (str(dtype).removeprefix("torch."), "int8", "int4"):
        if weights in ("int8", "int4"):
            del model
            torch.manual_seed(0)
            model = build(TINY if args.tiny else V2_7B, device, dtype)
            try:
                quantize_weights(model, weights)
            except LuminaError as error:
                print(f"{weights}: skipped ({error})")
                continue
        for compiled in (False, True):
            engine = DecodeEngine(model, layout, compile=compiled)
            for mode, speculative in (("plain", None), ("speculative", spec)):
                time_image(engine, prompt, canvas, rows, speculative)  # warm-up (and compile) of this shape
                name = f"{weights} {mode}{' compiled' if compiled else ''}"
                report(name, time_image(engine, prompt, canvas, rows, speculative))


if __name__ == "__main__":
    main()
