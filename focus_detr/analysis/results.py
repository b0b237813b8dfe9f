"""The results file of the tools: JSON lines, one measurement per line.

Fields (all optional except `config`; unknown fields are kept):
  config (config file path), overrides (list of key=value), label (series name for plots, default the method), method
  ("dense" | "sparse" | "focus"), keep_ratio, gflops, params_m (millions), ap (COCO box AP, %),
  fps, latency_s, device, threads, input_size ([h, w] or "dataset:<n>"), checkpoint, tool, time.

Tools append lines (analyze_model: gflops/params; benchmark: fps/latency and gflops; the
keep-ratio sweep and `--ap`/`--metrics` options: ap); `merge_results` joins the lines of one
(config, overrides, keep_ratio, checkpoint) into one record for the AP-vs-GFLOPs plot.
"""

import json
import math
import os
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

__all__ = [
    "RESULT_FIELDS",
    "append_result",
    "json_ready",
    "load_results",
    "merge_results",
    "read_coco_ap",
]

RESULT_FIELDS = (
    "config",
    "label",
    "method",
    "keep_ratio",
    "gflops",
    "params_m",
    "ap",
    "fps",
    "latency_s",
    "device",
    "threads",
    "input_size",
    "checkpoint",
    "tool",
    "time",
)


def json_ready(value: Any) -> Any:
    """`value` with every non-finite float (NaN, inf) replaced by None, recursively through dicts,
    lists and tuples: `json.dumps` would write `NaN`, which is not JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def append_result(path: str, record: Dict[str, Any]) -> Dict[str, Any]:
    """Append `record` (must have "config") as one JSON line; adds "time". Returns it."""
    if not record.get("config"):
        raise ValueError("a result record needs a 'config'")
    record = dict(record)
    record.setdefault("time", time.strftime("%Y-%m-%dT%H:%M:%S"))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(json_ready(record), sort_keys=True, allow_nan=False) + "\n")
    return record


def load_results(path: str) -> List[Dict[str, Any]]:
    """All records of a results file (blank lines skipped); a bad line is an error naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"results file not found: {path}")
    records = []
    with open(path) as f:
        first = f.read(1)
        f.seek(0)
        if first == "[":  # e.g. the keep-ratio sweep's --output rows
            raise ValueError(
                f"{path} is a JSON list, not a results file of JSON lines (one record per "
                "line); the keep-ratio sweep writes results records with --results FILE"
            )
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number}: not a JSON line: {e}") from e
            if not isinstance(record, dict) or "config" not in record:
                raise ValueError(f"{path}:{number}: a record must be an object with a 'config'")
            records.append(record)
    return records


def _key(record: Dict[str, Any]) -> Tuple:
    ratio = record.get("keep_ratio")
    overrides = tuple(
        sorted(
            o for o in record.get("overrides") or () if not o.startswith("train.init_checkpoint=")
        )
    )
    return (
        record["config"],
        overrides,
        None if ratio is None else round(float(ratio), 6),
        record.get("checkpoint") or None,
    )


def merge_results(records: Iterable[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One record per (config, overrides, keep_ratio, checkpoint): later non-null values win.
    Keeps the order of first appearance."""
    merged: Dict[Tuple, Dict[str, Any]] = {}
    for r in records:
        target = merged.setdefault(_key(r), {})
        target.update({k: v for k, v in r.items() if v is not None})
    return list(merged.values())


def read_coco_ap(metrics_path: str, key: str = "bbox/AP") -> Optional[float]:
    """The last `key` value in a detectron2 `metrics.json` (JSON lines), or in a JSON file of
    evaluation results ({"bbox": {"AP": ...}}). None when absent."""
    if not os.path.isfile(metrics_path):
        raise FileNotFoundError(f"metrics file not found: {metrics_path}")
    value = None
    with open(metrics_path) as f:
        text = f.read()
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    try:
        rows = (
            [whole]
            if isinstance(whole, dict)
            else [json.loads(l) for l in text.splitlines() if l.strip()]
        )
    except json.JSONDecodeError as e:
        raise ValueError(f"{metrics_path} is neither a JSON object nor JSON lines: {e}") from e
    task, _, metric = key.partition("/")
    for row in rows:
        if key in row:
            value = row[key]
        elif isinstance(row.get(task), dict) and metric in row[task]:
            value = row[task][metric]
    return None if value is None else float(value)
