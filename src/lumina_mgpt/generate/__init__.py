"""Generation: the decode loop (batched CFG, Uni-Rep grammar, per-row sampling), speculative Jacobi decoding,
best-of-N with a self-verifier, the generation config and presets, task wording, CLI."""

from lumina_mgpt.lazy import lazy_exports

_LAZY = {  # public name -> module, imported on first use
    **dict.fromkeys(["SelfVerifier", "Verifier", "select_best"], ".best_of"),
    **dict.fromkeys(["BlockState", "Kind", "Mode", "UniRepGrammar"], ".constraints"),
    **dict.fromkeys(["GenerationConfig", "OPTIONS", "Option", "options_of"], ".config"),
    **dict.fromkeys(["DecodeEngine", "DecodeResult", "DecodeSettings", "Step"], ".engine"),
    **dict.fromkeys(["PRESETS", "Preset", "preset_for"], ".presets"),
    **dict.fromkeys(["CounterNoise", "SamplingSettings", "row_seeds", "sample_tokens"], ".sampling"),
    **dict.fromkeys(["SpeculativeSettings", "speculative_settings"], ".speculative"),
    **dict.fromkeys(["TASKS", "Task", "task_message"], ".tasks"),
}
__all__ = sorted(_LAZY)
__getattr__ = lazy_exports(__name__, _LAZY)
