"""Build the ground-truth table: which cells, trained by worker processes, resumable.

Cells: the named ones (all ``skip_connect``, all ``conv_3x3``, NAS-Bench-201's best cell) and then, in a seeded
shuffle of all 15,625 encodings (so drawn uniformly over encodings), each encoding whose canonical cell is new, up to
``num_cells`` distinct cells. Every finished run is appended to a journal beside the table (one JSON line, flushed);
every ``save_every`` runs and at the end the journal is folded into the table (written atomically). Killed at any
moment, the next build reads the table and the journal and runs only what is missing.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import random
import subprocess
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..rundir import read_jsonl
from .recipe import GroundTruthRecipe, load_data, train_cell
from .space import all_archs, arch_from_string, canonical_key, edge_label, EDGES
from .table import GroundTruthTable

__all__ = ["NAMED_CELLS", "build_table", "planned_cells"]

#: The named cells every table holds (NAS-Bench-201's best CIFAR-10 cell is the paper's Table 5 optimum).
NAMED_CELLS: Dict[str, Dict[str, str]] = {
    "all_skip": {edge_label(*e): "skip_connect" for e in EDGES},
    "all_conv_3x3": {edge_label(*e): "conv_3x3" for e in EDGES},
    "nb201_best": arch_from_string(
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"),
}


def planned_cells(num_cells: int, draw_seed: int = 0) -> List[Dict[str, str]]:
    """The named cells, then ``num_cells`` distinct canonical cells drawn uniformly over encodings."""
    plan, seen = [], set()
    for arch in NAMED_CELLS.values():
        key = canonical_key(arch)
        if key not in seen:
            seen.add(key)
            plan.append(arch)
    encodings = list(all_archs())
    random.Random(draw_seed).shuffle(encodings)
    drawn = 0
    for arch in encodings:
        if drawn >= num_cells:
            break
        key = canonical_key(arch)
        if key not in seen:
            seen.add(key)
            plan.append(arch)
            drawn += 1
    return plan


def _git_commit() -> Optional[str]:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except OSError:
        return None


_WORKER: Dict[str, Any] = {}


def _init_worker(recipe: Dict[str, Any], root: Optional[str]) -> None:
    import warnings

    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", module="nni")  # NNI's "Buffer is not a nn.Module" notice at freeze time
    _WORKER["recipe"] = GroundTruthRecipe(**recipe)
    _WORKER["data"] = load_data(_WORKER["recipe"], root)


def _run(arch: Dict[str, str], seed: int) -> Tuple[Dict[str, str], Dict[str, Any]]:
    return arch, train_cell(arch, seed, _WORKER["data"], _WORKER["recipe"])


def _journal_path(table: Path) -> Path:
    return table.with_name(table.name + ".journal.jsonl")


def build_table(table_path: str | os.PathLike[str], *, num_cells: int = 500, seeds: Sequence[int] = (0, 1),
                workers: int = 2, recipe: Optional[GroundTruthRecipe] = None, draw_seed: int = 0,
                save_every: int = 20, max_runs: Optional[int] = None, progress: bool = True,
                data_root: Optional[str] = None) -> GroundTruthTable:
    """Train every planned (cell, seed) that ``table_path`` and its journal do not hold yet; returns the table.

    ``max_runs`` stops after that many new runs (a partial table, resumed by the next call). A table built with
    another recipe is refused (one table, one recipe).
    """
    recipe = GroundTruthRecipe() if recipe is None else recipe
    table_path = Path(table_path)
    journal = _journal_path(table_path)
    if table_path.exists():
        table = GroundTruthTable.load(table_path)
        if GroundTruthRecipe(**table.meta.get("recipe", {})).to_dict() != recipe.to_dict():
            raise ValueError(f"{table_path} was built with recipe {table.meta.get('recipe')}, not {recipe.to_dict()};"
                             f" pass another --table path for another recipe")
    else:
        table = GroundTruthTable(meta={"recipe": recipe.to_dict(), "wall_seconds": 0.0, "runs_seconds": 0.0})
    for entry in read_jsonl(journal):
        table.add(entry["arch"], [entry["result"]])
    plan = planned_cells(num_cells, draw_seed)
    todo = []
    for arch in plan:
        key = canonical_key(arch)
        have = {r["seed"] for r in table.cells[key].runs} if key in table.cells else set()
        todo.extend((arch, seed) for seed in seeds if seed not in have)
    if max_runs is not None:
        todo = todo[:max_runs]
    data_meta = load_data(recipe, data_root).meta if not table.meta.get("data") else table.meta["data"]
    table.meta.update({
        "data": data_meta, "num_cells_planned": len(plan), "draw_seed": draw_seed, "seeds": list(seeds),
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
                    "workers": workers, "threads_per_worker": 1, "python": platform.python_version(),
                    "torch": _torch_version()}})
    start, done_since_save = time.perf_counter(), 0

    def save(final: bool = False) -> None:
        table.meta["wall_seconds"] = round(table.meta.get("wall_seconds", 0.0) + time.perf_counter() - save.t0, 1)
        save.t0 = time.perf_counter()
        table.meta.update({"commit": _git_commit(), "date": datetime.date.today().isoformat(),
                           "runs": sum(len(c.runs) for c in table.cells.values())})
        table.save(table_path)
        if final:  # folded into the table; a kill before this line only leaves duplicates, which add() drops
            journal.unlink(missing_ok=True)

    save.t0 = start
    if not todo:
        save(final=True)
        return table
    bar = _progress(len(todo), progress)
    with journal.open("a", encoding="utf-8") as jf, ProcessPoolExecutor(
            max_workers=workers, mp_context=get_context("fork"), initializer=_init_worker,
            initargs=(recipe.to_dict(), data_root)) as pool:
        pending = {pool.submit(_run, arch, seed) for arch, seed in todo[:workers * 2]}
        queue = todo[workers * 2:]
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                arch, result = fut.result()
                jf.write(json.dumps({"arch": arch, "result": result}) + "\n")
                jf.flush()
                table.add(arch, [result])
                table.meta["runs_seconds"] = round(table.meta.get("runs_seconds", 0.0) + result["seconds"], 1)
                done_since_save += 1
                bar.update(1)
                if queue:
                    a, s = queue.pop(0)
                    pending.add(pool.submit(_run, a, s))
            if done_since_save >= save_every:
                save()
                jf.truncate(0)
                done_since_save = 0
    bar.close()
    save(final=True)
    return table


def _torch_version() -> str:
    import torch

    return torch.__version__


def _progress(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="run", desc="ground truth", disable=not enabled, dynamic_ncols=True)
