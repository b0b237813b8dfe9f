"""A killed-and-resumed training trains on the same batches with the same random draws as an
uninterrupted one: per-iteration losses are bit-identical on CPU."""

import numpy as np
import pytest

from conftest import TOY_CONFIG, run_train_net
from focus_detr.data import ResumableTrainLoader


def _mapper(d):
    """Uses numpy's global RNG like detectron2's augmentations; skips index 3 like an
    undecodable image."""
    if d["i"] == 3:
        return None
    return {"i": d["i"], "r": float(np.random.rand()), "width": d["w"], "height": 10}


def _batches(loader, n):
    it = iter(loader)
    return [[(x["i"], x["r"]) for x in next(it)] for _ in range(n)]


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_state_resumes_the_same_batches(workers):
    dataset = [{"i": i, "w": 5 if i % 3 else 20} for i in range(11)]
    full = ResumableTrainLoader(dataset, _mapper, 3, num_workers=0, seed=7)
    expected = _batches(full, 12)

    first = ResumableTrainLoader(dataset, _mapper, 3, num_workers=workers, seed=7)
    it = iter(first)
    head = [[(x["i"], x["r"]) for x in next(it)] for _ in range(5)]
    state = first.state_dict()
    assert head == expected[:5]  # the worker count does not change the stream
    resumed = ResumableTrainLoader(dataset, _mapper, 3, num_workers=workers, seed=123)
    resumed.load_state_dict(state)  # the saved seed wins
    assert _batches(resumed, 7) == expected[5:]
    # epochs are permutations of the dataset; the unmappable sample never appears
    seen = [i for batch in expected for i, _ in batch]
    assert 3 not in seen and set(seen) == set(range(11)) - {3}


def _losses(path):
    return [float(x) for x in path.read_text().split()]


@pytest.mark.slow
def test_killed_and_resumed_training_equals_the_uninterrupted_one(tmp_path):
    """Uninterrupted (no worker) vs crashed in iteration 5 after the checkpoint of iteration 3,
    then resumed (2 workers): iterations 4..7 have bit-identical losses. The evaluation at the
    checkpoint iteration 3 of the uninterrupted run does not shift its random draws."""
    common = [
        "--config-file",
        TOY_CONFIG,
        "train.max_iter=8",
        "train.checkpointer.period=2",
        "dataloader.train.total_batch_size=2",
    ]
    full_log = tmp_path / "full.txt"
    run_train_net(
        *common,
        f"train.output_dir={tmp_path / 'full'}",
        "train.eval_period=4",
        f"model.loss_log={full_log}",
        "dataloader.train.num_workers=0",
    )
    full = _losses(full_log)
    assert len(full) == 8

    log = tmp_path / "resumed.txt"
    out = tmp_path / "resumed"
    run_args = [
        *common,
        f"train.output_dir={out}",
        f"model.loss_log={log}",
        "dataloader.train.num_workers=2",
    ]
    crashed = run_train_net(*run_args, "model.crash_after_steps=5", check=False)
    assert crashed.returncode != 0
    assert (out / "last_checkpoint").read_text() == "model_0000003.pth"
    assert _losses(log) == full[:5]  # the worker count does not change the batches
    log.write_text("")
    run_train_net("--resume", *run_args)
    assert _losses(log) == full[4:]


@pytest.mark.slow
def test_killed_and_resumed_torchrun_training_equals_the_uninterrupted_one(tmp_path):
    """The same under torchrun with 2 CPU processes: each process gets its own data position and
    RNG states back, so each rank's losses after the resume equal the uninterrupted run's."""
    common = [
        "--config-file",
        TOY_CONFIG,
        "train.max_iter=6",
        "train.checkpointer.period=2",
        "dataloader.train.total_batch_size=4",
    ]
    run_train_net(
        *common,
        f"train.output_dir={tmp_path / 'full'}",
        f"model.loss_log={tmp_path / 'fullRANK.txt'}",
        nproc=2,
    )
    full = [_losses(tmp_path / f"full{r}.txt") for r in (0, 1)]
    assert [len(x) for x in full] == [6, 6] and full[0] != full[1]

    out = tmp_path / "resumed"
    run_args = [*common, f"train.output_dir={out}", f"model.loss_log={tmp_path / 'resRANK.txt'}"]
    crashed = run_train_net(*run_args, "model.crash_after_steps=5", nproc=2, check=False)
    assert crashed.returncode != 0
    assert (out / "last_checkpoint").read_text() == "model_0000003.pth"
    for r in (0, 1):
        (tmp_path / f"res{r}.txt").write_text("")
    run_train_net("--resume", *run_args, nproc=2)
    assert [_losses(tmp_path / f"res{r}.txt") for r in (0, 1)] == [x[4:] for x in full]
