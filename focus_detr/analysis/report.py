"""Plain-text (markdown) tables for the tools' output."""

import math
from typing import Any, List, Sequence

__all__ = ["format_number", "markdown_table"]


def format_number(value: Any, digits: int = 2) -> str:
    """Numbers with `digits` decimals (ints as is), None/nan as "-", anything else as str."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 2) -> str:
    """A markdown table (columns padded; the first left-aligned, the others right-aligned)."""
    cells: List[List[str]] = [[str(h) for h in headers]]
    cells += [[format_number(v, digits) for v in row] for row in rows]
    for row in cells:
        if len(row) != len(headers):
            raise ValueError(f"row {row} has {len(row)} cells for {len(headers)} columns")
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row):
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))
            )
            + " |"
        )

    sep = (
        "|"
        + "|".join(("-" * (w + 1) + ("-" if i == 0 else ":")) for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])
