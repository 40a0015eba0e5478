"""A benchmark's result: a titled table that prints as GitHub markdown."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Table:
    """Rows of cells under column headings, with a title and optional notes below."""

    title: str
    columns: Sequence[str]
    rows: list[Sequence[object]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        """The table as markdown: a bold title line, the table, then the notes."""
        widths = [len(str(c)) for c in self.columns]
        cells = [[_cell(value) for value in row] for row in self.rows]
        for row in cells:
            if len(row) != len(self.columns):
                raise ValueError(f"{self.title}: row {row} has {len(row)} cells, not {len(widths)}")
            widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

        def line(values: Sequence[str]) -> str:
            return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

        out = [f"**{self.title}**", "", line([str(c) for c in self.columns])]
        out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        out += [line(row) for row in cells]
        if self.notes:
            out += ["", *self.notes]
        return "\n".join(out)

    __str__ = markdown


def _cell(value: object) -> str:
    """A cell's text; pipes are escaped so they cannot split the cell."""
    return str(value).replace("|", "\\|")
