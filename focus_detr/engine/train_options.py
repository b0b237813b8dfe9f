"""The `train.fast_dev_run` and `train.wandb` options (the keys detrex's train_net reads, so a
config runs under either train_net).

- `fast_dev_run.enabled`: a smoke test of a config: `max_iter` iterations, evaluation every
  `eval_period`, metrics every `log_period` (detrex's 20 / 10 / 1 are the config defaults).
- `wandb.enabled`: also log the training metrics to Weights & Biases, with `wandb.params`
  (`dir`, `project`, `name`) passed to `wandb.init`; the `wandb` package is optional.
"""

import os

from detectron2.utils.events import EventWriter, get_event_storage

__all__ = ["WandbWriter", "apply_fast_dev_run", "wandb_writers"]


def apply_fast_dev_run(cfg):
    """With `train.fast_dev_run.enabled`, shorten the run to the smoke-test lengths given under
    `train.fast_dev_run` (in place). Returns `cfg`."""
    run = cfg.train.get("fast_dev_run", None)
    if run is None or not run.enabled:
        return cfg
    for key in ("max_iter", "eval_period", "log_period"):
        cfg.train[key] = int(run[key])
    return cfg


class WandbWriter(EventWriter):
    """Writes the event storage's latest scalars to a Weights & Biases run.

    Args:
        run: what `wandb.init` returned (anything with `log(dict, step=int)` and `finish()`).
        window_size: median window of smoothed scalars (as detectron2's JSON writer).
    """

    def __init__(self, run, window_size: int = 20):
        self._run = run
        self._window_size = window_size
        self._last_written = -1

    def write(self):
        storage = get_event_storage()
        values = {}
        for name, (value, iteration) in storage.latest_with_smoothing_hint(
            self._window_size
        ).items():
            if iteration > self._last_written:
                values[name] = value
        if values:
            self._run.log(values, step=storage.iter)
            self._last_written = storage.iter

    def close(self):
        self._run.finish()


def wandb_writers(cfg):
    """[WandbWriter] when `train.wandb.enabled`, else []; a clear error without the package."""
    options = cfg.train.get("wandb", None)
    if options is None or not options.enabled:
        return []
    try:
        import wandb  # optional dependency
    except ImportError:
        raise ImportError(
            "train.wandb.enabled=True needs the wandb package: pip install wandb "
            "(or set train.wandb.enabled=False)"
        ) from None
    params = dict(options.params)
    os.makedirs(params.get("dir", "."), exist_ok=True)
    return [WandbWriter(wandb.init(**params))]
