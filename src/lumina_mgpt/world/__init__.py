"""The shapes world (../shared/WORLD.md): scenes, rendering, captions, tasks, the detector, scorers, benchmark.

Everything is numpy and exact; see docs/world.md for the choices the contract leaves open.
"""

from lumina_mgpt.world.captions import (
    benchmark_prompts,
    describe,
    describe_scene,
    parse_description,
    scene_caption,
)
from lumina_mgpt.world.detect import Detection, detect, relation_holds
from lumina_mgpt.world.evaluate import DEFAULT_CANVASES, format_table, run_benchmark
from lumina_mgpt.world.oracle import oracle_chat, oracle_generate
from lumina_mgpt.world.palette import COLOR_NAMES, COLORS, SEG_COLORS, SHAPES
from lumina_mgpt.world.render import edge_map, render, segmentation_map, shape_mask
from lumina_mgpt.world.scene import Scene, SceneObject, place_objects, sample_scene, scene_problems
from lumina_mgpt.world.score import Verdict, score_t2i, score_task
from lumina_mgpt.world.spec import CATEGORIES, PromptSpec, scene_for_spec, spec_holds
from lumina_mgpt.world.tasks import OMNI_KINDS, TASK_KINDS, Task, benchmark_tasks, sample_task

__all__ = [
    "CATEGORIES",
    "COLORS",
    "COLOR_NAMES",
    "DEFAULT_CANVASES",
    "OMNI_KINDS",
    "SEG_COLORS",
    "SHAPES",
    "TASK_KINDS",
    "Detection",
    "PromptSpec",
    "Scene",
    "SceneObject",
    "Task",
    "Verdict",
    "benchmark_prompts",
    "benchmark_tasks",
    "describe",
    "describe_scene",
    "detect",
    "edge_map",
    "format_table",
    "oracle_chat",
    "oracle_generate",
    "parse_description",
    "place_objects",
    "relation_holds",
    "render",
    "run_benchmark",
    "sample_scene",
    "sample_task",
    "scene_caption",
    "scene_for_spec",
    "scene_problems",
    "score_t2i",
    "score_task",
    "segmentation_map",
    "shape_mask",
    "spec_holds",
]
