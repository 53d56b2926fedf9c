"""The shapes world (../shared/WORLD.md): scenes, rendering, captions, tasks, the detector, scorers, benchmark.

Everything is numpy and exact; see docs/world.md for the choices the contract leaves open.
"""

from lumina_mgpt.lazy import lazy_exports

_LAZY = {  # public name -> module, imported on first use (the evaluator imports torch)
    **dict.fromkeys(
        ["benchmark_prompts", "describe", "describe_scene", "parse_description", "scene_caption"], ".captions"
    ),
    **dict.fromkeys(["Detection", "detect", "relation_holds"], ".detect"),
    **dict.fromkeys(["DEFAULT_CANVASES", "format_table", "run_benchmark"], ".evaluate"),
    **dict.fromkeys(["oracle_chat", "oracle_generate"], ".oracle"),
    **dict.fromkeys(["COLOR_NAMES", "COLORS", "SEG_COLORS", "SHAPES"], ".palette"),
    **dict.fromkeys(["edge_map", "render", "segmentation_map", "shape_mask"], ".render"),
    **dict.fromkeys(["Scene", "SceneObject", "place_objects", "sample_scene", "scene_problems"], ".scene"),
    **dict.fromkeys(["Verdict", "score_t2i", "score_task"], ".score"),
    **dict.fromkeys(["CATEGORIES", "PromptSpec", "scene_for_spec", "spec_holds"], ".spec"),
    **dict.fromkeys(["OMNI_KINDS", "TASK_KINDS", "Task", "benchmark_tasks", "sample_task"], ".tasks"),
}
__all__ = sorted(_LAZY)
__getattr__ = lazy_exports(__name__, _LAZY)
