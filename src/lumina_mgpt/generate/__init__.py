"""Generation: the decode loop (batched CFG, Uni-Rep grammar, per-row sampling), speculative Jacobi decoding,
best-of-N with a self-verifier, presets, task wording, CLI."""

from lumina_mgpt.generate.best_of import SelfVerifier, Verifier, select_best
from lumina_mgpt.generate.constraints import BlockState, Kind, Mode, UniRepGrammar
from lumina_mgpt.generate.engine import DecodeEngine, DecodeResult, DecodeSettings, Step
from lumina_mgpt.generate.presets import PRESETS, Preset, preset_for
from lumina_mgpt.generate.sampling import RowRandom, SamplingSettings, row_seeds, sample_tokens
from lumina_mgpt.generate.speculative import SpeculativeSettings, speculative_settings
from lumina_mgpt.generate.tasks import TASKS, Task, task_message

__all__ = [
    "PRESETS",
    "TASKS",
    "BlockState",
    "DecodeEngine",
    "DecodeResult",
    "DecodeSettings",
    "Kind",
    "Mode",
    "Preset",
    "RowRandom",
    "SamplingSettings",
    "SelfVerifier",
    "SpeculativeSettings",
    "Step",
    "Task",
    "UniRepGrammar",
    "Verifier",
    "preset_for",
    "row_seeds",
    "sample_tokens",
    "select_best",
    "speculative_settings",
    "task_message",
]
