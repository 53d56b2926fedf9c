"""Generation: the decode loop (batched CFG, Uni-Rep grammar, per-row sampling), presets, task wording, CLI."""

from lumina_mgpt.generate.constraints import BlockState, Kind, Mode, UniRepGrammar
from lumina_mgpt.generate.engine import DecodeEngine, DecodeResult, DecodeSettings, Step
from lumina_mgpt.generate.presets import PRESETS, Preset, preset_for
from lumina_mgpt.generate.sampling import RowRandom, SamplingSettings, row_seeds, sample_tokens
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
    "Step",
    "Task",
    "UniRepGrammar",
    "preset_for",
    "row_seeds",
    "sample_tokens",
    "task_message",
]
