"""``python -m nni_darts_ext groundtruth {build,check,query}``: the ground-truth table's command line."""

from __future__ import annotations

import argparse
import json
import random
import sys

from ..groundtruth.table import DEFAULT_TABLE


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    b = sub.add_parser("build", help="train the table's cells (resumable: killed, it continues where it stopped)")
    b.add_argument("--table", default=str(DEFAULT_TABLE), help="table file (default: the shipped one)")
    b.add_argument("--cells", type=int, default=500, help="distinct cells drawn uniformly over encodings, besides "
                   "the three named ones (default 500)")
    b.add_argument("--seeds", type=int, default=2, help="training seeds per cell (default 2: seeds 0 and 1)")
    b.add_argument("--workers", type=int, default=2, help="worker processes, one thread each (default 2)")
    b.add_argument("--max-runs", type=int, default=None, help="stop after this many new runs (a partial table)")
    b.add_argument("--data-dir", default=None, help="data root (default: the package's data cache)")
    c = sub.add_parser("check", help="print the table's summary and seed-noise ratio; --retrain N re-trains N random "
                       "entries with the recorded recipe and compares")
    c.add_argument("--table", default=str(DEFAULT_TABLE))
    c.add_argument("--retrain", type=int, default=0, metavar="N")
    c.add_argument("--seed", type=int, default=0, help="which entries --retrain picks")
    q = sub.add_parser("query", help="the record of an arch (NNI dict JSON or a NAS-Bench-201 string)")
    q.add_argument("arch", help="JSON arch dict, a path to one, or '|nor_conv_3x3~0|+|...|'")
    q.add_argument("--table", default=str(DEFAULT_TABLE))
    q.add_argument("--train-missing", action="store_true", help="train a cell that is not in the table and add it")


def _parse_arch(text: str) -> dict:
    from pathlib import Path

    from ..groundtruth.space import arch_from_string

    if text.lstrip().startswith("|"):
        return arch_from_string(text)
    if Path(text).is_file():
        text = Path(text).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"arch {text[:80]!r} is neither JSON, a JSON file nor a NAS-Bench-201 string ({exc})") from exc


def run(args: argparse.Namespace) -> int:
    from ..groundtruth.table import GroundTruthTable

    if args.action == "build":
        from ..groundtruth.build import build_table

        table = build_table(args.table, num_cells=args.cells, seeds=tuple(range(args.seeds)), workers=args.workers,
                            max_runs=args.max_runs, progress=sys.stderr.isatty(), data_root=args.data_dir)
        print(json.dumps(table.summary(), indent=1))
        print(f"table: {args.table} ({len(table)} cells)")
        return 0
    table = GroundTruthTable.load(args.table)
    if args.action == "query":
        arch = _parse_arch(args.arch)
        record = table.query(arch, train_missing=args.train_missing)
        if args.train_missing:
            table.save(args.table)
        print(json.dumps({**record.to_dict(), "test_acc": record.test_acc,
                          "percentile": table.percentile(record.test_acc)}, indent=1))
        return 0
    summary = table.summary()
    print(json.dumps(summary, indent=1))
    nr, top = summary["noise_ratio"], summary["noise_ratio_top10"]
    if nr:
        print(f"seed-noise ratio: all {nr['cells']} cells {nr['ratio']:.3f} (seed std {nr['seed_std']:.4f} / between "
              f"{nr['between_std']:.4f}); top 10 % ({top['cells']} cells) {top['ratio']:.3f}")
    if args.retrain:
        return _self_check(table, args.retrain, args.seed)
    return 0


def _self_check(table, count: int, seed: int) -> int:
    """Re-train ``count`` random entries with the recorded recipe and seeds; each new accuracy must lie within the
    recorded seed spread (min - max over seeds, widened by the table's mean seed std)."""
    from ..groundtruth.recipe import GroundTruthRecipe, load_data, train_cell

    recipe = GroundTruthRecipe(**table.meta["recipe"])
    data = load_data(recipe)
    slack = table.noise_ratio()["seed_std"]
    cells = random.Random(seed).sample(sorted(table.cells.values(), key=lambda c: c.key), count)
    failures = 0
    for cell in cells:
        recorded = [r["test_acc"] for r in cell.runs]
        lo, hi = min(recorded) - slack, max(recorded) + slack
        new = train_cell(cell.arch, cell.runs[0]["seed"], data, recipe)["test_acc"]
        ok = lo <= new <= hi
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {cell.string}: recorded {recorded}, retrained (seed {cell.runs[0]['seed']})"
              f" {new:.4f}, allowed [{lo:.4f}, {hi:.4f}]")
    print(f"self-check: {count - failures} of {count} re-trainings within the recorded seed spread")
    return 0 if failures == 0 else 1
