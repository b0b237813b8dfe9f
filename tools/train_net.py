#!/usr/bin/env python
"""Train and/or evaluate a detector described by a LazyConfig file (detectron2/detrex style).

The config defines `model`, `dataloader` (train/test/evaluator), `optimizer`, `lr_multiplier`
and `train` (see configs/common/train.py). Examples:

    python tools/train_net.py --config-file projects/focus_detr/configs/focus_detr_tiny_synthetic.py
    python tools/train_net.py --config-file x.py train.max_iter=200 train.output_dir=output/run1
    python tools/train_net.py --config-file x.py --resume              # continue an interrupted run
    python tools/train_net.py --config-file x.py --eval-only train.init_checkpoint=out/model.pth
    python tools/train_net.py --config-file x.py --num-gpus 8         # one machine, 8 GPUs
    torchrun --nproc-per-node 2 tools/train_net.py --config-file x.py train.device=cpu  # CPU DDP

Overrides are `key=value` after the options (an unknown key is an error; `+key=value` adds
one), e.g. `train.max_iter=200 train.output_dir=output/run1 dataloader.train.total_batch_size=4`.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's focus_detr

from focus_detr.cli import filter_known_warnings, train_argument_parser  # noqa: E402

filter_known_warnings()  # before torch/detectron2 import: their import-time warnings


def default_argument_parser():
    """detectron2's training arguments, with this tool's LazyConfig examples."""
    return train_argument_parser(__doc__)


if __name__ == "__main__":
    default_argument_parser().parse_args()  # --help and bad arguments before torch loads

from detectron2.engine import launch  # noqa: E402
from detectron2.utils import comm  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

import focus_detr.data  # noqa: E402,F401  (registers the built-in dataset)
from focus_detr.engine import launch as entry  # noqa: E402
from focus_detr.engine.allocator import configure_allocator  # noqa: E402
from focus_detr.engine.distributed import (  # noqa: E402
    init_torchrun_process_group,
    launched_by_torchrun,
)
from focus_detr.engine.run_dir import setup_run  # noqa: E402


def load_config(args):
    """The config file with the command-line overrides applied (errors name the file or key)."""
    if not args.config_file:
        raise SystemExit("--config-file is required")
    return entry.load_config(args.config_file, args.opts, training=not args.eval_only)


def report_outputs(cfg, checkpointer, config_path=None):
    out = os.path.abspath(cfg.train.output_dir)
    last = checkpointer.get_checkpoint_file() if checkpointer.has_checkpoint() else None
    lines = [f"Outputs in {out}:"]
    if last:
        lines.append(f"  checkpoint:   {os.path.abspath(last)}")
    config = os.path.abspath(config_path) if config_path else os.path.join(out, "config.yaml")
    for path, what in (
        (os.path.join(out, "metrics.json"), "metrics:"),
        (config, "config:"),
        (os.path.join(out, "log.txt"), "log:"),
    ):
        if os.path.exists(path):
            lines.append(f"  {what:<13} {path}")
    if any(f.startswith("events.out.tfevents") for f in os.listdir(out)):
        lines.append(f"  TensorBoard:  {out}  (tensorboard --logdir {out})")
    print("\n".join(lines), flush=True)


def main(args, cfg=None):
    """Entry point of every process; returns (model, results).

    Args:
        args: parsed command line.
        cfg: the loaded config (None: load it here, e.g. in a process started by `launch`).
    """
    if cfg is None:
        cfg = load_config(args)
    if launched_by_torchrun():
        init_torchrun_process_group(cfg.train.device)
    kind = "eval" if args.eval_only else "resume" if args.resume else "train"
    # logging, seeding, environment info; the config saved without replacing another run's
    cfg_path = setup_run(cfg, args, kind)
    logger = setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="focus_detr")
    # large CPU tensors reused instead of page-faulted in at every iteration
    logger.info(f"malloc: {configure_allocator()}")
    if args.eval_only:
        model, checkpointer, results = entry.evaluate_checkpoint(cfg)
    else:
        model, _, checkpointer, results = entry.train(
            cfg, resume=args.resume, config_file=args.config_file
        )
    if comm.is_main_process():
        report_outputs(cfg, checkpointer, cfg_path)
    return model, results


def cli(argv=None):
    args = default_argument_parser().parse_args(argv)
    cfg = load_config(args)  # fail on a bad file or override before any worker starts
    if launched_by_torchrun():
        return main(args, cfg)
    if args.num_gpus * args.num_machines > 1:
        if not str(cfg.train.device).startswith("cuda"):
            raise ValueError(
                "--num-gpus/--num-machines start one process per GPU; for several "
                "CPU processes use torchrun --nproc-per-node N tools/train_net.py"
            )
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
        return None
    return main(args, cfg)


if __name__ == "__main__":
    cli()
