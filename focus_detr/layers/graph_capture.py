"""Graph capture (ONNX tracing, TorchScript, torch.export, torch.compile) and the Python-side
facts it must not read from tensors.

Checks that read tensor contents (a `.any()`, an `int(...)` of a count) cannot be recorded in a
captured graph: a trace bakes the example's answer in as a constant and torch.export refuses a
data-dependent branch. Such checks and eager-only fast paths test `capturing_graph()` and, when
capturing, take the branch-free computation; the exporter validates the example once instead.

The level shapes of a multi-scale map are such a fact: they travel as an (L, 2) tensor (the
deformable-attention API every DETR shares), yet loops over levels need them as Python ints.
`spatial_shapes_tensor` makes that tensor remember the ints it was built from, and
`level_shapes` / `level_starts` read them back without touching the tensor's contents, so under
torch.export they stay static (or symbolic, with dynamic shapes) instead of becoming unknowns.

An ONNX export with dynamic image sizes (`dynamic_shape_capture()`) records the sizes as graph
values: under tracing a tensor's sizes are 0-dim tensors, and everything derived from them (level
shapes and starts, keep counts, top-k's k) must stay tensor arithmetic, so the graph recomputes
it for every input (`capturing_dynamic_shapes()` tells the code to do so).
"""

from contextlib import contextmanager
from typing import List, Optional, Sequence, Tuple

import torch

__all__ = [
    "capturing_dynamic_shapes",
    "capturing_graph",
    "dynamic_shape_capture",
    "level_shapes",
    "level_starts",
    "spatial_shapes_tensor",
]

_SHAPES_ATTRIBUTE = "_level_shapes"
_dynamic_capture = [False]


def capturing_graph() -> bool:
    return (
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
    )


@contextmanager
def dynamic_shape_capture():
    """While open, a graph capture records input sizes as graph values (see the module docstring)."""
    previous = _dynamic_capture[0]
    _dynamic_capture[0] = True
    try:
        yield
    finally:
        _dynamic_capture[0] = previous


def capturing_dynamic_shapes() -> bool:
    """True while capturing a graph whose input sizes vary (`dynamic_shape_capture`)."""
    return _dynamic_capture[0] and capturing_graph()


def spatial_shapes_tensor(shapes: Sequence[Tuple[int, int]], device=None) -> torch.Tensor:
    """(L, 2) int64 (H, W) per level, remembering `shapes` for `level_shapes`."""
    if capturing_dynamic_shapes():
        # traced sizes are 0-dim tensors: stacking records them (as_tensor would bake the values)
        tensor = torch.stack(
            [torch.stack([torch.as_tensor(v, dtype=torch.long) for v in hw]) for hw in shapes]
        ).to(device)
    else:
        # built from the sizes as given (torch.Size under ONNX tracing, which records them)
        tensor = torch.as_tensor(list(shapes), dtype=torch.long, device=device)
    setattr(tensor, _SHAPES_ATTRIBUTE, tuple((h, w) for h, w in shapes))
    return tensor


def level_shapes(spatial_shapes) -> List[Tuple[int, int]]:
    """(H, W) per level as Python ints (symbolic ints under a dynamic-shape export).

    Args:
        spatial_shapes: (L, 2) tensor (read without a host sync when built by
            `spatial_shapes_tensor`) or a sequence of (H, W) pairs.
    """
    remembered = getattr(spatial_shapes, _SHAPES_ATTRIBUTE, None)
    if remembered is not None:
        return list(remembered)
    if torch.is_tensor(spatial_shapes):
        spatial_shapes = spatial_shapes.tolist()
    return [(int(h), int(w)) for h, w in spatial_shapes]


def level_starts(spatial_shapes, level_start_index: Optional[torch.Tensor] = None) -> List[int]:
    """First token of each level as Python ints: summed from the shapes when they are known to
    Python (or no index is given), else read from `level_start_index` (L,)."""
    if level_start_index is not None and getattr(spatial_shapes, _SHAPES_ATTRIBUTE, None) is None:
        return [int(s) for s in level_start_index.tolist()]
    starts, total = [], 0
    for h, w in level_shapes(spatial_shapes):
        starts.append(total)
        total = total + h * w
    return starts
