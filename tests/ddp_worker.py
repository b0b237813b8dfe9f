"""Run by torchrun in test_train_net.py: trains through tools/train_net.py's `cli`, then saves this
rank's weights and what detectron2's comm helpers report, for comparison across ranks."""

import importlib.util
import json
import os
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def main():
    out, argv = Path(sys.argv[1]), sys.argv[2:]
    spec = importlib.util.spec_from_file_location("train_net", REPO_ROOT / "tools" / "train_net.py")
    train_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_net)
    model, results = train_net.cli(argv)
    from detectron2.utils import comm

    rank = comm.get_rank()
    torch.save(model.state_dict(), out / f"rank{rank}.pth")
    info = {
        "rank": rank,
        "world_size": comm.get_world_size(),
        "local_rank": comm.get_local_rank(),
        "local_size": comm.get_local_size(),
        "env_local_rank": int(os.environ["LOCAL_RANK"]),
        "backend": torch.distributed.get_backend(),
        "has_results": bool(results),
    }
    (out / f"rank{rank}.json").write_text(json.dumps(info))


if __name__ == "__main__":
    main()
