"""The package's training and evaluation entry points, used by `tools/train_net.py`, the
keep-ratio sweep, the selection ablation and the learning tests:

- `load_config(path, overrides, training=True)`: a runnable config, overrides checked strictly;
- `train(cfg, resume=False, ...)`: the config's model, optimizer, LR schedule, gradient clipping,
  AMP and EMA, with checkpoints, periodic evaluation and metric writers (or, `save=False`, none
  of those: a short training inside an experiment);
- `evaluate(cfg, model, ...)`: the config's test loader through its evaluator;
- `evaluate_checkpoint(cfg)`: `evaluate` on the weights of `train.init_checkpoint` or of the run's
  last checkpoint.

It builds models and evaluators, so it ranks above them (with the tools);
`focus_detr.engine`'s `__init__` does not import it.
"""

import copy
import logging
import os
from contextlib import nullcontext
from typing import Any, Dict, NamedTuple, Optional, Sequence

import torch
from detectron2.config import instantiate
from detectron2.engine import hooks as d2_hooks
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from torch import nn

from ..analysis.accuracy import evaluate_model
from ..modeling.inference import inference_config_keys, instantiate_model
from .checkpoint import LRSchedulerHook, SafeDetectionCheckpointer, model_identity
from .config import load_config as load_strict_config
from .distributed import create_ddp_model
from .ema import EMAHook, ModelEMA, unwrap_model
from .resume import StreamState, StreamStateHook, preserved_rng
from .run_dir import training_writers
from .train_options import apply_fast_dev_run, wandb_writers
from .trainer import DetrTrainer

__all__ = ["TrainRun", "evaluate", "evaluate_checkpoint", "load_config", "train"]

logger = logging.getLogger("focus_detr.train_net")

REQUIRED_KEYS = ("model", "dataloader", "train")
TRAINING_KEYS = ("optimizer", "lr_multiplier")


class TrainRun(NamedTuple):
    """What `train` returns: the trained model (unwrapped from DDP), its trainer (whose
    `storage` holds the metric histories), the checkpointer (None with `save=False`) and the
    last evaluation's results ({} when none ran)."""

    model: nn.Module
    trainer: DetrTrainer
    checkpointer: Optional[SafeDetectionCheckpointer]
    results: Dict[str, Any]


def load_config(path: str, overrides: Sequence[str] = (), training: bool = True):
    """The config file `path` with the `key=value` overrides applied strictly, ready to run.

    Args:
        training: also require `optimizer` and `lr_multiplier` (not needed to evaluate).

    The detrex-style `model.device` follows `train.device` (config files set
    `model.device = train.device`, which a command-line `train.device=...` does not update), and
    `train.fast_dev_run` shortens the run.
    """
    required = REQUIRED_KEYS + (TRAINING_KEYS if training else ())
    cfg = load_strict_config(path, overrides, required=required, extra_keys=inference_config_keys)
    if "device" in cfg.model and cfg.model.device != cfg.train.device:
        cfg.model.device = cfg.train.device
    return apply_fast_dev_run(cfg)


def check_device(cfg) -> str:
    """`train.device`, refused when it names CUDA on a machine without it."""
    device = str(cfg.train.device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={device} but CUDA is not available; add train.device=cpu")
    return device


def _build_ema(cfg, model):
    opts = cfg.train.model_ema
    if not opts.enabled:
        return None
    return ModelEMA(model, decay=opts.decay, device=opts.get("device", ""))


def _eval_context(cfg, model, ema):
    """Evaluate with the EMA weights when the config asks for it."""
    if ema is not None and cfg.train.model_ema.use_ema_weights_for_eval_only:
        logger.info("Evaluating with the EMA weights")
        return ema.apply_to(model)
    return nullcontext()


def evaluate(
    cfg, model: nn.Module, ema: Optional[ModelEMA] = None, with_selection: bool = False
) -> Dict[str, Any]:
    """Run `cfg.dataloader.test` through `cfg.dataloader.evaluator`; prints and returns the
    results (on the main process; {} elsewhere and when the config has no evaluator).

    Args:
        ema: evaluate with its weights when `train.model_ema.use_ema_weights_for_eval_only`.
        with_selection: also score the token selection of a model whose encoder selects tokens
            (`focus_detr.analysis.accuracy.evaluate_model`).
    """
    if "evaluator" not in cfg.dataloader:
        return {}
    with _eval_context(cfg, model, ema):
        if with_selection:
            results = evaluate_model(cfg, unwrap_model(model))
        else:
            loader = instantiate(cfg.dataloader.test)  # first: loading may generate the dataset
            results = inference_on_dataset(model, loader, instantiate(cfg.dataloader.evaluator))
    if comm.is_main_process() and results:
        print_csv_format(results)
    return results


def _model_for(cfg, device, model):
    if model is None:
        model = instantiate_model(cfg.model)
        logger.info(f"Model:\n{model}")
    return model.to(device)


def train(
    cfg,
    resume: bool = False,
    *,
    model: Optional[nn.Module] = None,
    config_file: Optional[str] = None,
    hooks: Sequence = (),
    save: bool = True,
) -> TrainRun:
    """Train as `cfg` says, from iteration 0 or (`resume`) from the last checkpoint in
    `train.output_dir`, to `train.max_iter`.

    The optimizer is `cfg.optimizer` over the model's parameters, the LR schedule
    `cfg.lr_multiplier`, gradient clipping `train.clip_grad`, mixed precision `train.amp` (CUDA
    only: a warning elsewhere); `cfg` itself is left as it was.

    Args:
        model: the model to train (default: `instantiate_model(cfg.model)`), moved to
            `train.device`.
        config_file: the config's file, recorded in the checkpoints' model identity.
        hooks: extra detectron2 hooks, run after the built-in ones.
        save: with checkpoints (`train.checkpointer`), EMA, periodic evaluation
            (`train.eval_period`, and at the end) and metric writers; False trains only (no file
            is written, nothing evaluated).
    """
    device = check_device(cfg)
    extra_writers = wandb_writers(cfg) if save and comm.is_main_process() else []
    model = _model_for(cfg, device, model)
    optimizer_cfg = copy.deepcopy(cfg.optimizer)
    optimizer_cfg.params.model = model
    optimizer = instantiate(optimizer_cfg)
    train_loader = instantiate(cfg.dataloader.train)
    ema = _build_ema(cfg, model) if save else None
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
    schedule = LRSchedulerHook(scheduler=instantiate(cfg.lr_multiplier))
    if not save:
        trainer.register_hooks([d2_hooks.IterationTimer(), schedule, *hooks])
        model.train()
        trainer.train(0, cfg.train.max_iter)
        return TrainRun(unwrap_model(model), trainer, None, {})

    extra = {"ema": ema} if ema is not None else {}
    stream = StreamState(train_loader)  # RNG states and data position: an exact resume
    extra["stream"] = stream
    checkpointer = SafeDetectionCheckpointer(
        model,
        cfg.train.output_dir,
        model_info=model_identity(model, config_file),
        trainer=trainer,
        **extra,
    )
    results = {}

    def test_and_save_results():
        nonlocal results
        with preserved_rng():  # evaluating does not shift the training's random draws
            results = evaluate(cfg, model, ema)
        return results

    eval_period = cfg.train.eval_period if cfg.train.eval_period > 0 else cfg.train.max_iter
    trainer.register_hooks(
        [
            d2_hooks.IterationTimer(),
            EMAHook(ema, model) if ema is not None else None,
            schedule,
            StreamStateHook(stream, cfg.train.checkpointer.period, cfg.train.max_iter),
            (
                d2_hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
                if comm.is_main_process()
                else None
            ),
            d2_hooks.EvalHook(eval_period, test_and_save_results),
            *hooks,
        ]
    )

    if resume and checkpointer.has_checkpoint():
        checkpointer.check_resume_fits()  # another model's run directory: stop, load nothing
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=resume)
    if resume and checkpointer.has_checkpoint():
        start_iter = trainer.iter + 1  # the checkpoint was saved after iteration `trainer.iter`
    else:
        start_iter = 0
    if comm.is_main_process():  # last: the writers see every other hook's metrics
        writers = training_writers(cfg.train.output_dir, cfg.train.max_iter, start_iter)
        trainer.register_hooks(
            [d2_hooks.PeriodicWriter(writers + extra_writers, period=cfg.train.log_period)]
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
    return TrainRun(unwrap_model(model), trainer, checkpointer, results)


def eval_checkpoint_path(cfg) -> str:
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


def evaluate_checkpoint(cfg):
    """(model, checkpointer, results): the config's model with the weights of
    `eval_checkpoint_path(cfg)`, loaded strictly (a checkpoint that leaves weights random, e.g.
    another model or num_classes, fails instead of reporting a meaningless AP), evaluated."""
    path = eval_checkpoint_path(cfg)
    device = check_device(cfg)
    model = instantiate_model(cfg.model).to(device)
    ema = _build_ema(cfg, model)
    model = create_ddp_model(model, device, **cfg.train.ddp)
    checkpointer = SafeDetectionCheckpointer(
        model, cfg.train.output_dir, strict=True, **({"ema": ema} if ema is not None else {})
    )
    checkpointer.load(path)
    return unwrap_model(model), checkpointer, evaluate(cfg, model, ema)
