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

import logging
import os
import sys
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's focus_detr

from focus_detr.cli import filter_known_warnings, train_argument_parser  # noqa: E402

filter_known_warnings()  # before torch/detectron2 import: their import-time warnings


def default_argument_parser():
    """detectron2's training arguments, with this tool's LazyConfig examples."""
    return train_argument_parser(__doc__)


if __name__ == "__main__":
    default_argument_parser().parse_args()  # --help and bad arguments before torch loads

import torch  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.engine import hooks, launch  # noqa: E402
from detectron2.evaluation import inference_on_dataset, print_csv_format  # noqa: E402
from detectron2.utils import comm  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

import focus_detr.data  # noqa: E402,F401  (registers the built-in dataset)
from focus_detr.engine.allocator import configure_allocator  # noqa: E402
from focus_detr.engine.checkpoint import (  # noqa: E402
    LRSchedulerHook,
    SafeDetectionCheckpointer,
    model_identity,
)
from focus_detr.engine.config import apply_overrides  # noqa: E402
from focus_detr.engine.distributed import (  # noqa: E402
    create_ddp_model,
    init_torchrun_process_group,
    launched_by_torchrun,
)
from focus_detr.engine.ema import EMAHook, ModelEMA, unwrap_model  # noqa: E402
from focus_detr.engine.resume import StreamState, StreamStateHook, preserved_rng  # noqa: E402
from focus_detr.engine.run_dir import setup_run, training_writers  # noqa: E402
from focus_detr.engine.train_options import apply_fast_dev_run, wandb_writers  # noqa: E402
from focus_detr.engine.trainer import DetrTrainer  # noqa: E402
from focus_detr.modeling.inference import inference_config_keys, instantiate_model  # noqa: E402

logger = logging.getLogger("focus_detr.train_net")

REQUIRED_KEYS = ("model", "dataloader", "train")


def load_config(args):
    """The config file with the command-line overrides applied (errors name the file or key)."""
    path = args.config_file
    if not path:
        raise SystemExit("--config-file is required")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    cfg = LazyConfig.load(path)
    missing = [k for k in REQUIRED_KEYS if k not in cfg]
    if not args.eval_only:
        missing += [k for k in ("optimizer", "lr_multiplier") if k not in cfg]
    if missing:
        raise KeyError(f"config {path} does not define {', '.join(missing)}")
    cfg = apply_overrides(cfg, args.opts, inference_config_keys(cfg))
    # detrex-style models take the device too (set in config files as `model.device =
    # train.device`, which a command-line train.device=... does not update)
    if "device" in cfg.model and cfg.model.device != cfg.train.device:
        cfg.model.device = cfg.train.device
    return apply_fast_dev_run(cfg)


def check_device(cfg):
    device = str(cfg.train.device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"train.device={device} but CUDA is not available; " "add train.device=cpu"
        )
    return device


def eval_context(cfg, model, ema):
    """Evaluate with the EMA weights when the config asks for it."""
    if ema is not None and cfg.train.model_ema.use_ema_weights_for_eval_only:
        logger.info("Evaluating with the EMA weights")
        return ema.apply_to(model)
    return nullcontext()


def do_test(cfg, model, ema=None):
    """Run the test loader through the evaluator; returns its results (rank 0) or {}."""
    if "evaluator" not in cfg.dataloader:
        return {}
    loader = instantiate(cfg.dataloader.test)  # built first: loading may generate the dataset
    evaluator = instantiate(cfg.dataloader.evaluator)
    with eval_context(cfg, model, ema):
        results = inference_on_dataset(model, loader, evaluator)
    if comm.is_main_process() and results:
        print_csv_format(results)
    return results


def build_ema(cfg, model):
    opts = cfg.train.model_ema
    if not opts.enabled:
        return None
    return ModelEMA(model, decay=opts.decay, device=opts.get("device", ""))


def do_train(args, cfg):
    """Train as configured; returns (trained model, checkpointer, eval results)."""
    device = check_device(cfg)
    extra_writers = wandb_writers(cfg) if comm.is_main_process() else []  # fails before building
    model = instantiate_model(cfg.model).to(device)
    logger.info(f"Model:\n{model}")
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)
    ema = build_ema(cfg, model)
    model = create_ddp_model(model, device, **cfg.train.ddp)

    clip = cfg.train.clip_grad
    amp = bool(cfg.train.amp.enabled) and device.startswith("cuda")
    if cfg.train.amp.enabled and not amp:
        logger.warning("train.amp.enabled is ignored on %s: mixed precision is CUDA only", device)
    trainer = DetrTrainer(
        model,
        train_loader,
        optimizer,
        amp=amp,
        clip_grad_params=clip.params if clip.enabled else None,
    )
    extra = {"ema": ema} if ema is not None else {}
    # RNG states and data position of every process: an exact resume
    stream = StreamState(train_loader)
    extra["stream"] = stream
    checkpointer = SafeDetectionCheckpointer(
        model,
        cfg.train.output_dir,
        model_info=model_identity(model, args.config_file),
        trainer=trainer,
        **extra,
    )
    results = {}

    def test_and_save_results():
        nonlocal results
        with preserved_rng():  # evaluating does not shift the training's random draws
            results = do_test(cfg, model, ema)
        return results

    eval_period = cfg.train.eval_period if cfg.train.eval_period > 0 else cfg.train.max_iter
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            EMAHook(ema, model) if ema is not None else None,
            LRSchedulerHook(scheduler=instantiate(cfg.lr_multiplier)),
            StreamStateHook(stream, cfg.train.checkpointer.period, cfg.train.max_iter),
            (
                hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
                if comm.is_main_process()
                else None
            ),
            hooks.EvalHook(eval_period, test_and_save_results),
        ]
    )

    if args.resume and checkpointer.has_checkpoint():
        checkpointer.check_resume_fits()  # another model's run directory: stop, load nothing
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    if args.resume and checkpointer.has_checkpoint():
        start_iter = trainer.iter + 1  # the checkpoint was saved after iteration `trainer.iter`
    else:
        start_iter = 0
    if comm.is_main_process():  # last: the writers see every other hook's metrics
        writers = training_writers(cfg.train.output_dir, cfg.train.max_iter, start_iter)
        trainer.register_hooks(
            [hooks.PeriodicWriter(writers + extra_writers, period=cfg.train.log_period)]
        )
    if ema is not None and ema.num_updates == 0:
        ema.reset(model)  # start the average from the loaded weights, not the random init
    if start_iter >= cfg.train.max_iter:
        logger.info(
            f"Already trained for {start_iter} >= train.max_iter={cfg.train.max_iter} "
            "iterations; nothing to train"
        )
    else:
        trainer.train(start_iter, cfg.train.max_iter)
    return unwrap_model(model), checkpointer, results


def eval_checkpoint_path(cfg):
    """train.init_checkpoint, else the last checkpoint in train.output_dir."""
    if cfg.train.init_checkpoint:
        return cfg.train.init_checkpoint
    tag = os.path.join(cfg.train.output_dir, "last_checkpoint")
    if os.path.isfile(tag):
        with open(tag) as f:
            return os.path.join(cfg.train.output_dir, f.read().strip())
    raise FileNotFoundError(
        f"--eval-only needs weights: set train.init_checkpoint=<file.pth> (no "
        f"last_checkpoint in train.output_dir={cfg.train.output_dir} either)"
    )


def do_eval_only(args, cfg):
    path = eval_checkpoint_path(cfg)
    device = check_device(cfg)
    model = instantiate_model(cfg.model).to(device)
    ema = build_ema(cfg, model)
    model = create_ddp_model(model, device, **cfg.train.ddp)
    # strict: evaluating a checkpoint that leaves weights random (another model, backbone only,
    # another num_classes) must fail, not report a meaningless AP
    checkpointer = SafeDetectionCheckpointer(
        model, cfg.train.output_dir, strict=True, **({"ema": ema} if ema is not None else {})
    )
    checkpointer.load(path)
    return unwrap_model(model), checkpointer, do_test(cfg, model, ema)


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
    logger = setup_logger(
        cfg.train.output_dir, distributed_rank=comm.get_rank(), name="focus_detr"
    )
    # large CPU tensors reused instead of page-faulted in at every iteration
    logger.info(f"malloc: {configure_allocator()}")
    if args.eval_only:
        model, checkpointer, results = do_eval_only(args, cfg)
    else:
        model, checkpointer, results = do_train(args, cfg)
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
