"""Weight-only int8 / int4 quantisation of the transformer's decoder linears, with torchao.

    quantize_weights(model, "int8")   # CPU or CUDA, any float dtype
    quantize_weights(model, "int4")   # CUDA (compute capability >= 8) with bfloat16 weights: tinygemm kernel

Batch-1 decoding reads every weight once per forward, so smaller weights are faster where memory bandwidth
is the bound (GPUs) and always save memory. Activations stay in the model's dtype. The embeddings and the
output head stay as they are, as the releases keep them (HF's TorchAoConfig skips `lm_head`); the speculative
decoder reads the head's image-code rows directly. torchao 0.18 has no CPU int4 kernel (its plain int4 layout
needs the separate `mslk` package, the tinygemm one CUDA), so int4 on CPU is refused with a clear error.
"""

import torch

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.model.transformer import ChameleonTransformer

QUANT_MODES = ("int8", "int4")


def quantize_weights(model: ChameleonTransformer, mode: str, group_size: int = 128) -> ChameleonTransformer:
    """Replace the weight of every attention and MLP linear by a torchao weight-only int8 tensor (one scale per
    output row) or int4 tensor (one scale and zero point per `group_size` inputs), in place; returns `model`."""
    if mode not in QUANT_MODES:
        raise LuminaError(f"quantize must be one of {', '.join(QUANT_MODES)}, got {mode!r}")
    weight = model.model.layers[0].mlp.up_proj.weight
    if mode == "int4" and (weight.device.type != "cuda" or weight.dtype != torch.bfloat16):
        raise LuminaError(
            f"int4 weights need a CUDA GPU and bfloat16 weights (torchao's tinygemm kernel), got "
            f"{weight.dtype} on {weight.device.type}; use int8 here"
        )
    try:
        from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, quantize_
    except ImportError:
        raise LuminaError("quantised weights need torchao: pip install 'lumina-mgpt[quant]'") from None
    if mode == "int8":
        config = Int8WeightOnlyConfig()
    else:
        config = Int4WeightOnlyConfig(group_size=group_size, int4_packing_format="tile_packed_to_4d")
    try:
        quantize_(model.model.layers, config)
    except (AssertionError, ValueError, RuntimeError, NotImplementedError) as error:
        raise LuminaError(f"torchao cannot quantise these weights to {mode}: {error}") from None
    return model
