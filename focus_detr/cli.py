"""Command-line helpers shared by the tools; importable without torch or detectron2, so that a
tool parses (and answers `--help` or refuses bad arguments) before loading them.

- `tool_parser(doc)`: an `ArgumentParser` whose description is the docstring's first paragraph
  and whose epilog is the rest (the usage examples), shown verbatim by `--help`;
- `train_argument_parser(doc)`: the arguments of detectron2's `default_argument_parser`, with
  the tool's own LazyConfig examples instead of detectron2's yacs ones;
- `check_overrides(parser, opts)`: `key=value` overrides checked at parse time (an option after
  them, or a word without `=`, is a parse error naming it);
- `split_overrides(values)`: the overrides a `nargs="+"` option swallowed, given back.
"""

import argparse
import importlib.util
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import List, Sequence, Tuple

__all__ = [
    "check_overrides",
    "filter_known_warnings",
    "Progress",
    "is_override",
    "split_overrides",
    "standalone_module",
    "tool_parser",
    "train_argument_parser",
]

# `a.b=1`, `+a.new=2`, `a.list[0]=3`: hydra's override syntax, key part only
_OVERRIDE = re.compile(r"^[+~]{0,2}[A-Za-z_][\w\-]*(\.[\w\-]+|\[\d+\])*=")


def _doc_parts(doc: str) -> Tuple[str, str]:
    """(first paragraph, the rest) of a module docstring."""
    doc = (doc or "").strip("\n")
    first, _, rest = doc.partition("\n\n")
    return first.strip(), rest.strip("\n")


def tool_parser(doc: str, **kwargs) -> argparse.ArgumentParser:
    """A parser described by the docstring's first paragraph, the rest (examples) as epilog."""
    description, epilog = _doc_parts(doc)
    kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
    return argparse.ArgumentParser(description=description, epilog=epilog or None, **kwargs)


def is_override(word: str) -> bool:
    """Whether `word` reads as a `key=value` config override."""
    return bool(_OVERRIDE.match(word))


def check_overrides(parser: argparse.ArgumentParser, opts: Sequence[str]) -> List[str]:
    """`opts` as a list; a parse error (exit status 2) for an option placed after the overrides
    (argparse hands it to them: it would fail only once the config is loaded) or a word that is
    not `key=value`."""
    opts = list(opts)
    for o in opts:
        if o.startswith("-") and not is_override(o):
            parser.error(
                f"option {o} comes after the key=value overrides {opts}: the overrides take "
                "every word after the first one, so put the options before them"
            )
        if not is_override(o):
            parser.error(
                f"{o!r} is not a key=value config override (e.g. train.init_checkpoint=model.pth)"
            )
    return opts


def split_overrides(values: Sequence[str]) -> Tuple[List[str], List[str]]:
    """(values, overrides): the words of a `nargs="+"` option (e.g. `--input a.jpg b/`) that
    read as `key=value` overrides and name no existing file, split from the others."""
    kept, overrides = [], []
    for v in values:
        (overrides if is_override(v) and not os.path.exists(v) else kept).append(v)
    return kept, overrides


def _default_dist_url() -> str:
    # detectron2's choice: a port unlikely to collide between users of one machine
    port = 2**15 + 2**14 + hash(os.getuid() if hasattr(os, "getuid") else 1) % 2**14
    return f"tcp://127.0.0.1:{port}"


def train_argument_parser(doc: str) -> argparse.ArgumentParser:
    """detectron2's `default_argument_parser` arguments (same names and defaults) under the
    tool's own description and examples; the overrides are checked by `parse_args`."""
    parser = tool_parser(doc)
    parser.add_argument("--config-file", default="", metavar="FILE", help="LazyConfig file (.py)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last checkpoint in train.output_dir (if any)",
    )
    parser.add_argument("--eval-only", action="store_true", help="evaluate only")
    parser.add_argument("--num-gpus", type=int, default=1, help="GPUs per machine")
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument(
        "--machine-rank", type=int, default=0, help="the rank of this machine (unique per machine)"
    )
    parser.add_argument(
        "--dist-url",
        default=_default_dist_url(),
        help="initialization URL for pytorch distributed backend (several machines)",
    )
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="config overrides key=value after the options, e.g. train.max_iter=100 "
        "(+key=value adds a key)",
    )
    parse = parser.parse_args

    def parse_args(args=None, namespace=None):
        parsed = parse(args, namespace)
        parsed.opts = check_overrides(parser, parsed.opts)
        return parsed

    parser.parse_args = parse_args
    return parser


def standalone_module(name: str):
    """The module `name` of this package loaded from its file alone, without running its
    packages' `__init__` (which import torch): for parse-time constants and helpers of modules
    that import only the standard library (e.g. `focus_detr.engine.allocator`,
    `focus_detr.analysis.results`). The loaded module is the same as `sys.modules[name]` when
    that is already imported."""
    if name in sys.modules:
        return sys.modules[name]
    parts = name.split(".")
    if parts[0] != __name__.split(".")[0]:
        raise ValueError(f"{name} is not a module of {__name__.split('.')[0]}")
    path = Path(__file__).resolve().parent.joinpath(*parts[1:]).with_suffix(".py")
    spec = importlib.util.spec_from_file_location(f"_standalone_{'_'.join(parts)}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def filter_known_warnings() -> None:
    """Silence warnings every tool would print that say nothing about the user's run: fvcore
    (imported by detectron2) scripts a function with `torch.jit.script`, which recent torch
    deprecates with a FutureWarning at import time."""
    warnings.filterwarnings(
        "ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning
    )


class Progress:
    """Progress lines for long work the tools do silently otherwise (FLOP counting, training
    inside a tool): `update(done, note)` prints "label: done/total, elapsed, ETA" at most every
    `min_interval_s` seconds (and always for the last step), to `stream` (default stdout).

    Args:
        total: steps in all.
        label: what is being done, e.g. "[focus@0.3] training".
        min_interval_s: least seconds between two lines (0: every update).
    """

    def __init__(self, total: int, label: str, min_interval_s: float = 5.0, stream=None):
        self.total, self.label, self.min_interval_s = int(total), label, min_interval_s
        self.stream = stream
        self._clock = time.perf_counter
        self.start = self._clock()
        self._last = None

    def line(self, done: int, note: str = "", now: float = None) -> str:
        elapsed = (self._clock() if now is None else now) - self.start
        eta = elapsed / done * (self.total - done) if done else float("nan")
        eta_text = "-" if eta != eta else _duration(eta)
        extra = f", {note}" if note else ""
        return (
            f"{self.label}: {done}/{self.total}{extra}, elapsed {_duration(elapsed)}, "
            f"ETA {eta_text}"
        )

    def update(self, done: int, note: str = "") -> None:
        now = self._clock()
        due = self._last is None or now - self._last >= self.min_interval_s
        if due or done >= self.total:
            self._last = now
            print(self.line(done, note, now), file=self.stream or sys.stdout, flush=True)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
