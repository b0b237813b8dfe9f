"""tools/train_net.py end to end on the test-only ToyDetector (CPU, a few iterations)."""

import json
import re

import pytest
import torch

from conftest import REPO_ROOT, TOY_CONFIG, run_train_net
from focus_detr.engine import safe_load_checkpoint
from focus_detr.engine.launch import eval_checkpoint_path, load_config


def _ap(stdout):
    """The bbox AP printed by detectron2's evaluation ("copypaste: AP,AP50,...")."""
    rows = re.findall(r"copypaste: (\d+\.\d+),(\d+\.\d+),", stdout)
    assert rows, f"no COCO AP in the output:\n{stdout[-3000:]}"
    return float(rows[-1][0])


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory, synthetic_splits):
    out = tmp_path_factory.mktemp("toy_run")
    proc = run_train_net("--config-file", TOY_CONFIG, f"train.output_dir={out}")
    return out, proc.stdout


def test_training_writes_checkpoints_metrics_and_tensorboard(toy_run):
    out, stdout = toy_run
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    state = safe_load_checkpoint(str(out / "model_final.pth"))  # weights_only loading works
    assert state["trainer"]["iteration"] == 5  # max_iter=6: iterations 0..5
    steps = {float(s["step"]) for s in state["trainer"]["optimizer"]["state"].values()}
    assert steps == {6.0}
    assert (out / "model_0000002.pth").is_file()  # checkpointer.period=3
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert {m["iteration"] for m in metrics if "total_loss" in m} == {1, 3, 5}
    assert any("bbox/AP" in m for m in metrics)  # the final evaluation is recorded
    assert any(p.name.startswith("events.out.tfevents") for p in out.iterdir())
    assert (out / "config.yaml").is_file()
    # progress and results on the console
    assert "eta:" in stdout and "Evaluation results for bbox" in stdout
    assert re.search(r"\|\s+AP\s+\|\s+AP50\s+\|", stdout)
    assert f"checkpoint:   {out / 'model_final.pth'}" in stdout
    assert str(out / "metrics.json") in stdout and "TensorBoard" in stdout
    assert 0.0 <= _ap(stdout) <= 100.0


def test_eval_only_loads_the_checkpoint(toy_run, tmp_path):
    out, stdout = toy_run
    proc = run_train_net(
        "--eval-only",
        "--config-file",
        TOY_CONFIG,
        f"train.init_checkpoint={out / 'model_final.pth'}",
        f"train.output_dir={tmp_path}",
    )
    assert "Evaluation results for bbox" in proc.stdout
    assert f"Loading from {out / 'model_final.pth'}" in proc.stdout
    assert _ap(proc.stdout) == _ap(stdout)  # same weights, same data: the same AP


def test_eval_only_refuses_a_checkpoint_that_does_not_fit(toy_run, tmp_path):
    """A checkpoint missing a weight (another model, backbone only) fails --eval-only with the
    key named, instead of evaluating random weights."""
    out, _ = toy_run
    state = safe_load_checkpoint(str(out / "model_final.pth"))["model"]
    dropped = sorted(state)[-1]
    del state[dropped]
    path = tmp_path / "partial.pth"
    torch.save({"model": state}, path)
    proc = run_train_net(
        "--eval-only",
        "--config-file",
        TOY_CONFIG,
        f"train.init_checkpoint={path}",
        f"train.output_dir={tmp_path}",
        check=False,
    )
    assert proc.returncode != 0
    assert "CheckpointMismatchError" in proc.stdout
    assert f"checkpoint {path} does not fit" in proc.stdout and dropped in proc.stdout
    assert "Evaluation results for bbox" not in proc.stdout


def test_eval_only_checkpoint_choice(tmp_path):
    cfg = load_config(TOY_CONFIG, [f"train.output_dir={tmp_path}"], training=False)
    with pytest.raises(FileNotFoundError, match="--eval-only needs weights.*train.init_checkpoint"):
        eval_checkpoint_path(cfg)
    (tmp_path / "last_checkpoint").write_text("model_0000009.pth")
    assert eval_checkpoint_path(cfg) == str(tmp_path / "model_0000009.pth")
    cfg.train.init_checkpoint = "/weights/given.pth"
    assert eval_checkpoint_path(cfg) == "/weights/given.pth"


def test_crash_then_resume_continues_at_the_same_iteration(tmp_path):
    common = [
        "--config-file",
        TOY_CONFIG,
        f"train.output_dir={tmp_path}",
        "train.checkpointer.period=2",
        "train.model_ema.enabled=True",
    ]
    crashed = run_train_net(*common, "model.crash_after_steps=4", check=False)
    assert crashed.returncode != 0 and "simulated crash after 4 steps" in crashed.stdout
    # the checkpoint saved after iteration 3 survived the crash
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000003.pth"
    before = safe_load_checkpoint(str(tmp_path / "model_0000003.pth"))
    assert before["trainer"]["iteration"] == 3 and before["ema"]["num_updates"] == 4

    resumed = run_train_net("--resume", *common)
    assert "Starting training from iteration 4" in resumed.stdout
    final = safe_load_checkpoint(str(tmp_path / "model_final.pth"))
    assert final["trainer"]["iteration"] == 5
    assert final["ema"]["num_updates"] == 6  # the EMA continued, not restarted
    steps = {float(s["step"]) for s in final["trainer"]["optimizer"]["state"].values()}
    assert steps == {6.0}  # AdamW's state continued too
    assert final["trainer"]["hooks"]["LRSchedulerHook"]["last_epoch"] == 6
    # the EMA is a real average: different from the final weights
    assert any(
        not torch.equal(final["ema"]["state"][k], v)
        for k, v in final["model"].items()
        if v.is_floating_point()
    )


def test_torchrun_two_processes_keep_identical_replicas(tmp_path):
    out = tmp_path / "ranks"
    out.mkdir()
    run_train_net(
        out,
        "--config-file",
        TOY_CONFIG,
        f"train.output_dir={tmp_path / 'run'}",
        "train.max_iter=4",
        nproc=2,
        script=REPO_ROOT / "tests" / "ddp_worker.py",
    )
    infos = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r, info in enumerate(infos):
        assert info == {
            "rank": r,
            "world_size": 2,
            "local_rank": r,
            "local_size": 2,
            "env_local_rank": r,
            "backend": "gloo",
            "has_results": r == 0,
        }
    w0, w1 = (torch.load(out / f"rank{r}.pth", weights_only=True) for r in (0, 1))
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    # rank 0 saved exactly these weights; they were trained: they changed since iteration 2
    final = safe_load_checkpoint(str(tmp_path / "run" / "model_final.pth"))["model"]
    assert all(torch.equal(final[k], w0[k]) for k in w0)
    earlier = safe_load_checkpoint(str(tmp_path / "run" / "model_0000002.pth"))["model"]
    assert any(not torch.equal(earlier[k], w0[k]) for k in w0)


def test_init_checkpoint_is_loaded_and_starts_the_ema(toy_run, tmp_path):
    out, _ = toy_run
    init = safe_load_checkpoint(str(out / "model_final.pth"))["model"]
    run_train_net(
        "--config-file",
        TOY_CONFIG,
        f"train.output_dir={tmp_path}",
        f"train.init_checkpoint={out / 'model_final.pth'}",
        "train.max_iter=1",
        "optimizer.lr=0.0",
        "optimizer.weight_decay=0.0",
        "train.model_ema.enabled=True",
        "train.eval_period=0",
    )
    final = safe_load_checkpoint(str(tmp_path / "model_final.pth"))
    assert final["trainer"]["iteration"] == 0  # a new run, not a resumed one
    for k, v in init.items():  # lr 0: the weights are the loaded ones, and so is their EMA
        assert torch.equal(final["model"][k], v), k
        assert torch.allclose(final["ema"]["state"][k].float(), v.float()), k
