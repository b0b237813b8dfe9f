"""A training loader whose batches are a pure function of (seed, position in the sample stream),
so a resumed training gets exactly the batches an uninterrupted one would have had.

detectron2's `build_detection_train_loader` restarts its sampler at the first sample on every
start, and its augmentations draw from each worker's global RNGs, so a resumed run trains on
other batches. Here:

- the sample stream of rank r is positions r, r + W, r + 2W, ... (W processes) of an infinite
  sequence of seeded permutations of the dataset (permutation e seeded by (seed, e));
- the mapper of the sample at global position g runs with numpy's and Python's global RNGs seeded
  by (seed, g) (their previous states restored afterwards), so its augmentation does not depend
  on which worker maps it, nor on what was mapped before;
- batches are formed in the main process from the stream in order (grouped by aspect ratio like
  detectron2's), and `state_dict()` holds the stream position and the positions waiting in the
  aspect-ratio buckets; `load_state_dict` makes the next iteration continue from there.

The result does not depend on `num_workers` either.
"""

import logging
import random

import numpy as np
import torch
from detectron2.utils import comm

__all__ = ["ResumableTrainLoader", "build_resumable_train_loader"]

logger = logging.getLogger(__name__)

_SEED_MODULUS = 2**32


def _identity(x):
    return x


class _PositionedSamples:
    """(position, mapped sample or None) for a process's stream positions from `start`."""

    def __init__(self, dataset, mapper, seed, shuffle, rank, world_size):
        self.dataset, self.mapper = dataset, mapper
        self.seed, self.shuffle = int(seed), shuffle
        self.rank, self.world_size = rank, world_size
        self._perm_epoch, self._perm = None, None

    def index_at(self, position):
        """Dataset index at this process's stream `position`."""
        g = self.rank + position * self.world_size
        n = len(self.dataset)
        epoch, offset = divmod(g, n)
        if not self.shuffle:
            return offset
        if epoch != self._perm_epoch:
            epoch_seed = int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0])
            gen = torch.Generator().manual_seed(epoch_seed)
            self._perm, self._perm_epoch = torch.randperm(n, generator=gen).tolist(), epoch
        return self._perm[offset]

    def map_at(self, position):
        g = self.rank + position * self.world_size
        np_state, py_state = np.random.get_state(), random.getstate()
        np.random.seed([self.seed % _SEED_MODULUS, g % _SEED_MODULUS, g // _SEED_MODULUS])
        random.seed(f"{self.seed}-{g}")
        try:
            return self.mapper(self.dataset[self.index_at(position)])
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


class _Stream(torch.utils.data.IterableDataset):
    """Positions start, start + 1, ...: worker w of K takes those = start + w (mod K), so the
    DataLoader's round-robin over workers gives them back in order. A sample that cannot be
    mapped (None) is still yielded, to keep that order."""

    def __init__(self, samples, start):
        self.samples, self.start = samples, start

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        position = self.start + worker
        while True:
            yield position, self.samples.map_at(position)
            position += workers


class ResumableTrainLoader:
    """Infinite iterable of training batches (lists of mapped dicts), resumable exactly.

    Args:
        dataset (list[dict]): dataset dicts.
        mapper (callable): dict -> mapped dict, or None to skip the sample.
        batch_size (int): images per batch of this process.
        num_workers (int): DataLoader worker processes.
        aspect_ratio_grouping (bool): batch images with width > height apart from the others.
        seed (int or None): None: a seed shared by all processes, drawn now (saved in the state,
            so a resumed run keeps it).
        shuffle (bool): permute the dataset in each epoch.
    """

    def __init__(
        self,
        dataset,
        mapper,
        batch_size,
        num_workers=0,
        aspect_ratio_grouping=True,
        seed=None,
        shuffle=True,
    ):
        if batch_size <= 0:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        if not len(dataset):
            raise ValueError("the training dataset is empty")
        self.dataset, self.mapper = dataset, mapper
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.aspect_ratio_grouping, self.shuffle = aspect_ratio_grouping, shuffle
        self.seed = int(seed) if seed is not None else int(comm.shared_random_seed())
        self.rank, self.world_size = comm.get_rank(), comm.get_world_size()
        self.position = 0  # stream positions consumed by the batches handed out
        self._buckets = [[], []]  # (position, mapped) waiting for a full batch
        self._restored_pending = None

    def _bucket(self, data):
        if not self.aspect_ratio_grouping:
            return 0
        w, h = data.get("width", 1), data.get("height", 1)
        return 0 if w > h else 1

    def __iter__(self):
        samples = _PositionedSamples(
            self.dataset, self.mapper, self.seed, self.shuffle, self.rank, self.world_size
        )
        self._buckets = [[], []]
        for b, positions in enumerate(self._restored_pending or ([], [])):
            for p in positions:
                data = samples.map_at(p)
                if data is not None:
                    self._buckets[b].append((p, data))
        self._restored_pending = None
        loader = torch.utils.data.DataLoader(
            _Stream(samples, self.position),
            batch_size=None,
            num_workers=self.num_workers,
            collate_fn=_identity,
            # its own generator: creating the iterator must not consume the global torch RNG,
            # which a resumed run restores from the checkpoint
            generator=torch.Generator().manual_seed(self.seed),
            persistent_workers=False,
        )
        for position, data in loader:
            self.position = position + 1
            if data is None:
                continue
            bucket = self._buckets[self._bucket(data)]
            bucket.append((position, data))
            if len(bucket) == self.batch_size:
                batch = [d for _, d in bucket]
                bucket.clear()
                yield batch

    def state_dict(self):
        return {
            "seed": self.seed,
            "position": self.position,
            "pending": [[p for p, _ in b] for b in self._buckets],
            "world_size": self.world_size,
            "rank": self.rank,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state):
        if (state.get("world_size"), state.get("batch_size")) != (self.world_size, self.batch_size):
            logger.warning(
                "The checkpoint's data position was saved with %s processes and %s images per "
                "process, this run has %s and %s: the data stream restarts from its beginning "
                "(the resume is not exact)",
                state.get("world_size"),
                state.get("batch_size"),
                self.world_size,
                self.batch_size,
            )
            return
        self.seed = int(state["seed"])
        self.position = int(state["position"])
        self._restored_pending = [list(b) for b in state["pending"]]


def build_resumable_train_loader(
    dataset,
    mapper,
    total_batch_size,
    num_workers=0,
    aspect_ratio_grouping=True,
    seed=None,
    shuffle=True,
):
    """`ResumableTrainLoader` with detectron2's `build_detection_train_loader` arguments (the
    batch is split over the processes), for use in configs in its place."""
    world = comm.get_world_size()
    if total_batch_size <= 0 or total_batch_size % world:
        raise ValueError(
            f"total_batch_size={total_batch_size} must be a positive multiple of "
            f"the number of processes ({world})"
        )
    return ResumableTrainLoader(
        dataset,
        mapper,
        total_batch_size // world,
        num_workers,
        aspect_ratio_grouping,
        seed,
        shuffle,
    )
