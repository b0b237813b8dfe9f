"""Cost and selection analysis of DINO-family detectors, shared by the tools
(analyze_model, benchmark, visualize_tokens, demo, plot_ap_flops) and the keep-ratio sweep:
FLOPs by model part (fvcore, deformable and scaled-dot-product attention counted), latency by
part with interleaved runs, eval outputs carrying the token selection, and the JSON-lines
results file."""

from .accuracy import evaluate_model
from .flops import (
    ACTIVATION_HANDLES,
    FLOP_HANDLES,
    MODEL_PARTS,
    InferenceTracer,
    activation_analysis,
    flop_analysis,
    model_part_counts,
    model_part_parameters,
    module_counts,
)
from .latency import (
    LATENCY_PARTS,
    LatencyResult,
    PartTimer,
    detail_parts,
    measure_interleaved,
    paired_ratio,
    set_threads,
    spread,
)
from .model_io import (
    build_model,
    dataset_inputs,
    describe_encoder,
    image_list,
    load_config,
    resolve_device,
    synthetic_inputs,
)
from .results import RESULT_FIELDS, append_result, load_results, merge_results, read_coco_ap
from .selection import record_token_selection

__all__ = [
    "ACTIVATION_HANDLES",
    "FLOP_HANDLES",
    "InferenceTracer",
    "LATENCY_PARTS",
    "LatencyResult",
    "MODEL_PARTS",
    "PartTimer",
    "RESULT_FIELDS",
    "activation_analysis",
    "append_result",
    "build_model",
    "dataset_inputs",
    "describe_encoder",
    "detail_parts",
    "evaluate_model",
    "flop_analysis",
    "image_list",
    "load_config",
    "load_results",
    "measure_interleaved",
    "merge_results",
    "model_part_counts",
    "model_part_parameters",
    "module_counts",
    "paired_ratio",
    "read_coco_ap",
    "record_token_selection",
    "resolve_device",
    "set_threads",
    "spread",
    "synthetic_inputs",
]
