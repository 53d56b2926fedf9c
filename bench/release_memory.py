"""GPU memory and the memory-bandwidth bound on seconds per image of each release, computed (not measured) from
its shape (parameters, KV cache) at its resolution: `python bench/release_memory.py` prints docs/releases.md's
table. Weight-only int8/int4 quantise the decoder linears (int4: group 128, a bf16 scale and zero per group);
embeddings and the output head stay bf16. The KV cache holds a conditional and an unconditional row (CFG), each
for the prompt plus the image block, in bf16. The bound: every step reads all weights once and the KV so far."""

from dataclasses import dataclass

GIB = 2**30
BANDWIDTH = {"A100-80GB": 2.039e12, "H100-SXM": 3.35e12}  # bytes per second (datasheets)
PROMPT = 40  # tokens of a typical text-to-image prompt with its template


@dataclass(frozen=True)
class Shape:
    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    mlp: int
    vocab: int
    side: int  # resolution in px
    latent_factor: int

    @property
    def linear_params(self) -> int:
        head = self.hidden // self.heads
        attn = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_heads * head
        return self.layers * (attn + 3 * self.hidden * self.mlp)

    @property
    def other_params(self) -> int:  # embeddings, untied head, norms (RMS x2 per layer, q/k norms, final)
        return 2 * self.vocab * self.hidden + self.layers * (2 * self.hidden + 4 * 128) + self.hidden

    @property
    def block(self) -> int:
        n = self.side // self.latent_factor
        return n * (n + 1) + 4

    @property
    def kv_bytes_per_token(self) -> int:
        return self.layers * 2 * self.kv_heads * (self.hidden // self.heads) * 2


SHAPES = [
    Shape("v1 7B @512", 4096, 32, 32, 32, 11008, 65536, 512, 16),
    Shape("v1 7B @768", 4096, 32, 32, 32, 11008, 65536, 768, 16),
    Shape("v1 7B @1024", 4096, 32, 32, 32, 11008, 65536, 1024, 16),
    Shape("v1 34B @512", 8192, 48, 64, 8, 22016, 65536, 512, 16),  # [inferred] shape: check config.json
    Shape("v2 7B @768", 4096, 32, 32, 32, 11008, 171385, 768, 8),
]


def main() -> None:
    print(
        "| model | params | block tokens | KV (CFG) GiB | bf16 GiB | int8 GiB | int4 GiB | bound s/image bf16 (A100 / H100) | int4 (A100 / H100) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in SHAPES:
        params = s.linear_params + s.other_params
        tokens = PROMPT + s.block
        kv = 2 * tokens * s.kv_bytes_per_token
        weights = {
            "bf16": 2 * params,
            "int8": s.linear_params + 2 * s.other_params,
            "int4": s.linear_params // 2 + s.linear_params // 128 * 4 + 2 * s.other_params,
        }
        avg_kv = 2 * (PROMPT + s.block / 2) * s.kv_bytes_per_token  # read per step, on average

        row = [s.name, f"{params / 1e9:.2f} B", f"{s.block:,}", f"{kv / GIB:.1f}"]
        row += [f"{(w + kv) / GIB:.1f}" for w in weights.values()]
        row += [_bound(s.block, weights[k] + avg_kv) for k in ("bf16", "int4")]
        print("| " + " | ".join(row) + " |")


def _bound(steps: int, bytes_per_step: float) -> str:
    return " / ".join(f"{steps * bytes_per_step / bandwidth:.0f}" for bandwidth in BANDWIDTH.values())


if __name__ == "__main__":
    main()
