"""Files written whole or not at all: a run killed mid-write leaves the previous file intact."""

import os
from typing import Callable

__all__ = ["write_atomically", "write_text_atomically"]


def write_atomically(path: str, write: Callable[[str], None]) -> str:
    """Call `write(tmp)` to produce the file at a temporary path beside `path`, then rename it
    over `path` (atomic on POSIX); the temporary file is removed if `write` fails."""
    tmp = path + ".tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_text_atomically(path: str, text: str) -> str:
    """`text` at `path`, written whole or not at all."""

    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    return write_atomically(path, write)
