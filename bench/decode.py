"""Decode speed: our engine against transformers' `generate` on the very same Chameleon weights.

    python bench/decode.py [--hidden 64 --layers 2 --canvas 128 --cfg 4.0 --device cpu --compile {auto,on,off}]

Both sides sample one image block of the canvas with the same settings (temperature 1, image top-k), batch 1.
Without guidance transformers runs `generate(do_sample=True, top_k=...)`; with guidance it uses its
`guidance_scale` + `negative_prompt_ids` path (UnbatchedClassifierFreeGuidanceLogitsProcessor: a second batch-1
forward per token on the unconditional context, the image start token onward), which is how both releases
guide. Our engine runs eager and with its compiled step (`--compile auto`, the default: the faster of the two by
measurement, as a user would pick; the first, compiling run is a warm-up and not timed on either side). Prints
tokens/s of each and the ratio; the last line is `speedup: <ratio with CFG>`.
"""

import argparse
import time
from collections.abc import Callable

import torch
from transformers import ChameleonConfig as HFConfig
from transformers import ChameleonForConditionalGeneration

from lumina_mgpt.generate.engine import DecodeEngine, DecodeSettings
from lumina_mgpt.generate.sampling import SamplingSettings
from lumina_mgpt.model import ChameleonConfig, ChameleonTransformer
from lumina_mgpt.unirep import block_length
from lumina_mgpt.vocab import TokenLayout

SPECIALS, MAX_UNITS = 8, 32  # ids 0..7: bos, sep, start, end, eol, ...; then size tokens, then image codes


def bench_layout(vocab: int, codebook: int) -> TokenLayout:
    sizes = torch.tensor([-1, *range(SPECIALS, SPECIALS + MAX_UNITS)])
    first_code = SPECIALS + MAX_UNITS
    return TokenLayout(
        name="ours",
        vocab_size=vocab,
        bos_id=0,
        turn_sep_id=1,
        stop_ids=(1,),
        image_start_id=2,
        image_end_id=3,
        eol_id=4,
        latent_factor=8,
        size_token_ids=sizes,
        image_token_ids=torch.arange(first_code, first_code + codebook),
    )


def build_models(args: argparse.Namespace) -> tuple[ChameleonTransformer, ChameleonForConditionalGeneration]:
    fields = dict(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 8 // 3 // 16 * 16,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=4096,
        initializer_range=0.05,
    )
    torch.manual_seed(0)
    ours = ChameleonTransformer(ChameleonConfig(**fields))
    ours.init_weights()
    tiny_vq = dict(
        embed_dim=4, num_embeddings=32, latent_channels=4, base_channels=32, channel_multiplier=[1, 2]
    )
    hf = ChameleonForConditionalGeneration(
        HFConfig(
            **fields,
            vocabulary_map={"<image>": args.vocab - 1},
            vq_config=tiny_vq,
            attn_implementation="sdpa",
        )
    )
    missing, unexpected = hf.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and all(".vqmodel." in k for k in missing), (missing, unexpected)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    return ours.to(args.device, dtype).eval(), hf.to(args.device, dtype).eval()


def tokens_per_second(
    run: Callable[[int], int], repeats: int, clock: Callable[[], float], device: str
) -> float:
    """Tokens per second of `run(seed) -> new tokens`, over `repeats` runs after one warm-up run."""
    tokens = seconds = 0.0
    for seed in range(repeats + 1):
        _sync(device)
        began = clock()
        count = run(seed)
        _sync(device)
        if seed:
            tokens += count
            seconds += clock() - began
    return tokens / seconds


def ours_run(
    engine: DecodeEngine, prompt: list[int], canvas: int, cfg: float, top_k: int
) -> Callable[[int], int]:
    settings = DecodeSettings(
        image=SamplingSettings(1.0, top_k),
        cfg_scale=cfg,
        stop_at_image_end=True,
        max_new_tokens=block_length(canvas, canvas, engine.layout) - 1,
    )
    return lambda seed: engine.generate([prompt], settings, [seed], [(canvas, canvas)]).stats[
        "generated_tokens"
    ]


def transformers_run(
    model, prompt: list[int], new_tokens: int, cfg: float, top_k: int
) -> Callable[[int], int]:
    ids = torch.tensor([prompt], device=model.device)
    guidance = (
        {} if cfg == 1.0 else {"guidance_scale": cfg, "negative_prompt_ids": ids[:, -1:]}
    )  # image start

    def run(seed: int) -> int:
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = model.generate(
                ids,
                do_sample=True,
                top_k=top_k,
                temperature=1.0,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=0,
                **guidance,
            )
        return out.shape[1] - ids.shape[1]

    return run


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--codebook", type=int, default=1024)
    parser.add_argument(
        "--canvas", type=int, default=128, help="square canvas side in pixels (latent factor 8)"
    )
    parser.add_argument("--cfg", type=float, default=4.0)
    parser.add_argument("--top-k", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: steady timings)")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default=None,
        help="wall time, or process CPU time (the default on a single CPU thread: robust on a shared machine)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--compile",
        choices=["auto", "on", "off"],
        default="auto",
        help="our engine eager (off), with its compiled step (on), or the faster of both by measurement (auto)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ours, hf = build_models(args)
    layout = bench_layout(args.vocab, args.codebook)
    engines = {
        name: DecodeEngine(ours, layout, compile=name == "compiled")
        for name in {"auto": ("eager", "compiled"), "on": ("compiled",), "off": ("eager",)}[args.compile]
    }
    prompt = [
        0,
        *range(SPECIALS + MAX_UNITS + args.codebook, SPECIALS + MAX_UNITS + args.codebook + 24),
        1,
        2,
    ]
    new_tokens = block_length(args.canvas, args.canvas, layout) - 1
    print(
        f"model: hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}; device {args.device}; "
        f"{new_tokens} tokens per {args.canvas}x{args.canvas} image, top-k {args.top_k}, batch 1"
    )
    cpu_clock = args.clock == "cpu" or (args.clock is None and args.device == "cpu" and args.threads == 1)
    clock = time.process_time if cpu_clock else time.perf_counter
    print(f"clock: {'process CPU time' if cpu_clock else 'wall time'}")
    ratios = []
    for cfg in (1.0, args.cfg):
        speeds = {
            name: tokens_per_second(
                ours_run(engine, prompt, args.canvas, cfg, args.top_k), args.repeats, clock, args.device
            )
            for name, engine in engines.items()
        }
        best = max(speeds, key=speeds.get)
        theirs = tokens_per_second(
            transformers_run(hf, prompt, new_tokens, cfg, args.top_k), args.repeats, clock, args.device
        )
        ratios.append(speeds[best] / theirs)
        each = "  ".join(f"{name} {speed:.1f}" for name, speed in speeds.items())
        print(
            f"cfg {cfg:g}: ours {speeds[best]:8.1f} tok/s ({best}; {each})   transformers {theirs:8.1f} tok/s"
            f"   ratio {ratios[-1]:.2f}x"
        )
    print(f"speedup: {ratios[-1]:.2f}")


if __name__ == "__main__":
    main()
