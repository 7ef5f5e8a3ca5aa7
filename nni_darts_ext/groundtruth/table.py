"""The ground-truth table: arch -> record, canonicalised, with the statistics that say whether it ranks cells.

A table file is gzipped JSON ``{"meta": {...recipe, data, commit, date, machine, wall_seconds...}, "cells": [...]}``;
each cell ``{key, arch, string, params, mult_adds, runs: [{seed, train_acc, valid_acc, test_acc, seconds}, ...]}``.
The shipped table is :data:`DEFAULT_TABLE` (``python -m nni_darts_ext groundtruth build`` made it).
"""

from __future__ import annotations

import gzip
import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from .space import arch_to_string, canonical_key, validate_arch

__all__ = ["DEFAULT_TABLE", "CellRecord", "GroundTruthTable", "NotInTableError", "TableFormatError"]

#: The table shipped with the package (NAS-Bench-201 space, C=8, one cell per stage, Fashion-MNIST 16x16).
DEFAULT_TABLE = Path(__file__).with_name("nb201_fashion16.json.gz")
_FORMAT = 1


class NotInTableError(KeyError):
    """An arch whose canonical cell the table does not hold."""

    def __str__(self) -> str:  # KeyError would print the repr
        return str(self.args[0])


class TableFormatError(ValueError):
    """A table file that is not a ground-truth table (corrupt, truncated, or another format)."""


@dataclass
class CellRecord:
    """One canonical cell: its arch (the first encoding trained), per-seed results and size."""

    key: str
    arch: Dict[str, str]
    params: int
    mult_adds: int
    runs: List[Dict[str, Any]]

    def _mean(self, field: str) -> float:
        return statistics.fmean(r[field] for r in self.runs)

    @property
    def test_acc(self) -> float:
        """Mean test accuracy over seeds."""
        return self._mean("test_acc")

    @property
    def valid_acc(self) -> float:
        return self._mean("valid_acc")

    @property
    def train_acc(self) -> float:
        return self._mean("train_acc")

    @property
    def seconds(self) -> float:
        """Mean training CPU seconds of one run (one thread): what a search pays to learn this cell's accuracy."""
        return self._mean("seconds")

    @property
    def string(self) -> str:
        return arch_to_string(self.arch)

    def to_dict(self) -> Dict[str, Any]:
        return {"key": self.key, "arch": self.arch, "string": self.string, "params": self.params,
                "mult_adds": self.mult_adds, "runs": sorted(self.runs, key=lambda r: r["seed"])}


class GroundTruthTable:
    """Records by canonical key (:func:`~nni_darts_ext.groundtruth.space.canonical_key`), so every encoding of a
    cell, isomorphic or with unreachable edges changed, finds the same record."""

    def __init__(self, cells: Iterable[CellRecord] = (), meta: Optional[Mapping[str, Any]] = None):
        self.meta: Dict[str, Any] = dict(meta or {})
        self.cells: Dict[str, CellRecord] = {}
        for cell in cells:
            self.cells[cell.key] = cell

    # --- IO ---------------------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str] = DEFAULT_TABLE) -> "GroundTruthTable":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"ground-truth table {path} does not exist; build one with "
                                    f"`python -m nni_darts_ext groundtruth build --table {path}`")
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                data = json.load(f)
            if data.get("format") != _FORMAT:
                raise TableFormatError(f"{path} has table format {data.get('format')!r}, this code reads {_FORMAT}")
            cells = [CellRecord(key=c["key"], arch=validate_arch(c["arch"]), params=int(c["params"]),
                                mult_adds=int(c["mult_adds"]), runs=list(c["runs"])) for c in data["cells"]]
        except (OSError, EOFError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, TableFormatError):
                raise
            raise TableFormatError(f"{path} is not a readable ground-truth table ({type(exc).__name__}: {exc}); "
                                   f"rebuild it with `python -m nni_darts_ext groundtruth build --table {path}` or "
                                   f"restore it with `git checkout -- {path}`") from exc
        for cell in cells:
            if canonical_key(cell.arch) != cell.key:
                raise TableFormatError(f"{path}: record {cell.string} has key {cell.key!r}, not its canonical key")
        return cls(cells, data.get("meta"))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (a temporary file, then ``os.replace``): a kill never leaves half a table."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"format": _FORMAT, "meta": self.meta,
                "cells": [c.to_dict() for c in sorted(self.cells.values(), key=lambda c: c.key)]}
        tmp = path.with_name(path.name + ".tmp")
        with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=9) as f:
            json.dump(data, f, separators=(",", ":"))
        os.replace(tmp, path)

    # --- query ------------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.cells)

    def __contains__(self, arch: Mapping[str, str]) -> bool:
        return canonical_key(arch) in self.cells

    def query(self, arch: Mapping[str, str], *, train_missing: bool = False, seeds: Sequence[int] = (0, 1),
              data: Any = None) -> CellRecord:
        """The record of ``arch``'s canonical cell. A cell not in the table raises :class:`NotInTableError`, or with
        ``train_missing`` is trained with the table's recipe (``seeds``) and added."""
        key = canonical_key(arch)
        if key in self.cells:
            return self.cells[key]
        if not train_missing:
            raise NotInTableError(f"{arch_to_string(arch)} (canonical {key}) is not among the table's {len(self)} "
                                  f"cells; pass train_missing=True to train it with the table's recipe and add it")
        from .recipe import GroundTruthRecipe, load_data, train_cell

        recipe = GroundTruthRecipe(**self.meta.get("recipe", {}))
        data = data if data is not None else load_data(recipe)
        runs = [train_cell(arch, seed, data, recipe) for seed in seeds]
        return self.add(arch, runs)

    def add(self, arch: Mapping[str, str], runs: Sequence[Mapping[str, Any]]) -> CellRecord:
        """Add (or extend with new seeds) the record of ``arch`` from :func:`~.recipe.train_cell` results."""
        arch = validate_arch(arch)
        key = canonical_key(arch)
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = CellRecord(key=key, arch=arch, params=int(runs[0]["params"]),
                                                mult_adds=int(runs[0]["mult_adds"]), runs=[])
        have = {r["seed"] for r in cell.runs}
        for r in runs:
            if r["seed"] not in have:
                fields = ("seed", "train_acc", "valid_acc", "test_acc", "seconds", "wall_seconds")
                cell.runs.append({k: r[k] for k in fields if k in r})
                have.add(r["seed"])
        return cell

    # --- statistics -------------------------------------------------------------------------------------------------
    def accuracies(self, field: str = "test_acc") -> List[float]:
        return [getattr(c, field) for c in self.cells.values()]

    def percentile(self, test_acc: float) -> float:
        """The share of the table's cells (mean test accuracy) strictly below ``test_acc``, ties half: 100 = the
        best."""
        accs = self.accuracies()
        below = sum(a < test_acc for a in accs) + 0.5 * sum(a == test_acc for a in accs)
        return 100.0 * below / len(accs)

    def noise_ratio(self, top_fraction: float = 1.0) -> Dict[str, float]:
        """Mean per-cell seed std of test accuracy over the std between cells' means, for all cells with 2+ seeds
        or the best ``top_fraction`` of them (by mean test accuracy). Below 0.25 the table ranks cells."""
        cells = sorted((c for c in self.cells.values() if len(c.runs) >= 2), key=lambda c: c.test_acc, reverse=True)
        cells = cells[:max(2, round(len(cells) * top_fraction))]
        if len(cells) < 2:
            raise ValueError("noise_ratio needs at least 2 cells with 2+ seeds")
        seed_std = statistics.fmean(statistics.stdev(r["test_acc"] for r in c.runs) for c in cells)
        between = statistics.stdev(c.test_acc for c in cells)
        return {"cells": len(cells), "seed_std": seed_std, "between_std": between,
                "ratio": seed_std / between if between > 0 else float("inf")}

    def best(self) -> CellRecord:
        return max(self.cells.values(), key=lambda c: c.test_acc)

    def median_acc(self) -> float:
        return statistics.median(self.accuracies())

    def summary(self) -> Dict[str, Any]:
        """The table's headline: cells, seeds, noise ratios (all, top 10 %), best and median test accuracy."""
        out: Dict[str, Any] = {"cells": len(self), "seeds": sorted({r["seed"] for c in self.cells.values()
                                                                      for r in c.runs}),
                               "best_acc": self.best().test_acc, "best_cell": self.best().string,
                               "median_acc": self.median_acc(), "recipe": self.meta.get("recipe")}
        try:
            out["noise_ratio"] = self.noise_ratio()
            out["noise_ratio_top10"] = self.noise_ratio(0.1)
        except ValueError:
            out["noise_ratio"] = out["noise_ratio_top10"] = None
        return out
