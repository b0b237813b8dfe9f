"""Set-up of a run's output directory: logging, environment report, seeding, the config
history, in which a run never replaces another run's config, and metric writers that record each
iteration once even across a resume.

The first training run in a directory saves its config as `config.yaml`; every other run there
(a resumed training, an evaluation, a new training over an old one) saves its own
`config_<kind>_<UTC time>.yaml` beside it. A file is written whole (temporary file, rename) once
the config has loaded and been checked, so a run that fails at once leaves the history as it was.
"""

import json
import logging
import os
import time

import torch
from detectron2.config import LazyConfig
from detectron2.utils import comm
from detectron2.utils.collect_env import collect_env_info
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter
from detectron2.utils.logger import setup_logger

from .files import write_atomically, write_text_atomically

__all__ = [
    "RUN_KINDS",
    "drop_metrics_from",
    "run_config_path",
    "save_run_config",
    "setup_run",
    "training_writers",
]

RUN_KINDS = ("train", "resume", "eval")
TRAINING_CONFIG = "config.yaml"


def run_config_path(output_dir, kind, now=None):
    """Where a run of `kind` ("train", "resume" or "eval") saves its config in `output_dir`:
    `config.yaml` for the directory's first training, else a new timestamped file."""
    if kind not in RUN_KINDS:
        raise ValueError(f"run kind must be one of {RUN_KINDS}, got {kind!r}")
    if kind == "train" and not os.path.exists(os.path.join(output_dir, TRAINING_CONFIG)):
        return os.path.join(output_dir, TRAINING_CONFIG)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    path = os.path.join(output_dir, f"config_{kind}_{stamp}.yaml")
    n = 1
    while os.path.exists(path):  # two runs within a second
        path = os.path.join(output_dir, f"config_{kind}_{stamp}-{n}.yaml")
        n += 1
    return path


def save_run_config(cfg, output_dir, kind):
    """Save `cfg` at `run_config_path(output_dir, kind)`, whole or not at all; returns the path."""
    os.makedirs(output_dir, exist_ok=True)
    return write_atomically(
        run_config_path(output_dir, kind), lambda tmp: LazyConfig.save(cfg, tmp)
    )


def setup_run(cfg, args, kind):
    """detectron2's `default_setup` (loggers, environment and command line in the log, seeds,
    cudnn benchmark flag) with the config saved by `save_run_config` instead of always over
    `config.yaml`. Returns the saved config's path (rank 0; None elsewhere)."""
    output_dir = cfg.train.output_dir
    rank = comm.get_rank()
    if comm.is_main_process() and output_dir:
        os.makedirs(output_dir, exist_ok=True)
    setup_logger(output_dir, distributed_rank=rank, name="fvcore")
    logger = setup_logger(output_dir, distributed_rank=rank)
    logger.info(f"Rank of current process: {rank}. World size: {comm.get_world_size()}")
    logger.info("Environment info:\n" + collect_env_info())
    logger.info(f"Command line arguments: {args}")
    config_file = getattr(args, "config_file", "")
    if config_file:
        with open(config_file) as f:
            logger.info(f"Contents of args.config_file={config_file}:\n{f.read()}")
    path = None
    if comm.is_main_process() and output_dir:
        path = save_run_config(cfg, output_dir, kind)
        logging.getLogger(__name__).info(f"Full config saved to {path}")
    seed = cfg.train.get("seed", -1)
    seed_all_rng(None if seed < 0 else seed + rank)
    if kind != "eval":
        torch.backends.cudnn.benchmark = bool(cfg.train.get("cudnn_benchmark", False))
    return path


def drop_metrics_from(path, start_iter):
    """Rewrite the JSON-lines metrics file `path` without the records of iterations
    >= `start_iter` (written by a run that died after its last checkpoint, and trained again by
    the run starting at `start_iter`) and without a last line cut off by a kill. Atomic: a
    crash meanwhile leaves the old file. Returns the number of lines dropped."""
    if not os.path.isfile(path):
        return 0
    with open(path) as f:
        lines = f.read().splitlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("iteration", -1) < start_iter:
            kept.append(line)
    dropped = len(lines) - len(kept)
    if dropped:
        write_text_atomically(path, "".join(line + "\n" for line in kept))
        logging.getLogger(__name__).info(
            f"{path}: dropped {dropped} record(s) of iterations >= {start_iter} from an earlier "
            "run; this run writes them again"
        )
    return dropped


def training_writers(output_dir, max_iter, start_iter=0, window_size=20):
    """detectron2's default writers (console, metrics.json, TensorBoard) for a training that
    starts at `start_iter`: metrics.json first loses its records of iterations >= start_iter,
    and TensorBoard hides the earlier events of those steps (`purge_step`), so every iteration
    is recorded once. Create them after the checkpoint is loaded (start_iter known)."""
    os.makedirs(output_dir, exist_ok=True)
    metrics = os.path.join(output_dir, "metrics.json")
    drop_metrics_from(metrics, start_iter)
    return [
        CommonMetricPrinter(max_iter),
        JSONWriter(metrics, window_size=window_size),
        TensorboardXWriter(
            output_dir,
            window_size=window_size,
            **({"purge_step": start_iter} if start_iter > 0 else {}),
        ),
    ]
