"""Training defaults read by tools/train_net.py (`train` of a config)."""

train = dict(
    # where checkpoints, metrics.json, TensorBoard events, config.yaml and eval results go
    output_dir="./output",
    # weights loaded before training (or evaluated with --eval-only); "" for none
    init_checkpoint="",
    max_iter=90000,
    # automatic mixed precision; only used on CUDA
    amp=dict(enabled=False),
    # DistributedDataParallel options
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    # gradient clipping by total norm before each optimizer step
    clip_grad=dict(enabled=True, params=dict(max_norm=0.1, norm_type=2)),
    # exponential moving average of the weights, stored in checkpoints as "ema"
    model_ema=dict(
        enabled=False,
        decay=0.999,
        # "" keeps the EMA weights on the model's device
        device="",
        # evaluate with the EMA weights (during training and with --eval-only)
        use_ema_weights_for_eval_only=False,
    ),
    # save a checkpoint every `period` iterations, keep the newest `max_to_keep`
    checkpointer=dict(period=5000, max_to_keep=100),
    # evaluate every `eval_period` iterations (and at the end); 0: only at the end
    eval_period=5000,
    # write metrics every `log_period` iterations
    log_period=20,
    # "cuda" or "cpu"
    device="cuda",
    # random seed; negative: a random one (logged)
    seed=-1,
    # a smoke test of the config: these few iterations, evaluation and logging (detrex's key)
    fast_dev_run=dict(enabled=False, max_iter=20, eval_period=10, log_period=1),
    # also log metrics to Weights & Biases (needs `pip install wandb`; detrex's key)
    wandb=dict(
        enabled=False,
        params=dict(dir="./wandb_output", project="focus_detr", name="focus_detr_experiment"),
    ),
)
