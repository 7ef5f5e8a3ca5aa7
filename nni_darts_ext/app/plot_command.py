"""``python -m nni_darts_ext plot ARCH``: draw the cells of an arch file or a published genotype."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..space.genotype import PUBLISHED_GENOTYPES
from ..viz import PlotError, plot_genotype, resolve_genotype

__all__ = ['add_arguments', 'run']


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('arch', help='arch JSON file (arch.json or a summary.json) or a published genotype name '
                                     f'({", ".join(PUBLISHED_GENOTYPES)})')
    parser.add_argument('--out', default=None, help='output folder (default: the arch file\'s folder, or ./plots)')
    parser.add_argument('--formats', nargs='+', default=['png', 'svg'], help='graphviz output formats')
    parser.add_argument('--prefix', default='cell_', help='file name prefix')


def run(args: argparse.Namespace) -> int:
    genotype = resolve_genotype(args.arch)
    out = Path(args.out) if args.out else (Path(args.arch).parent if Path(args.arch).is_file() else Path('plots'))
    if out.exists() and not out.is_dir():
        raise ValueError(f'--out {out} is a file, not a folder; pass the folder for the pictures.')
    created = not out.exists()
    try:
        files = plot_genotype(genotype, out, prefix=args.prefix, formats=tuple(args.formats))
    except Exception as err:
        if created:  # a failed command leaves nothing behind
            import shutil
            shutil.rmtree(out, ignore_errors=True)
        if isinstance(err, PlotError):
            raise ValueError(str(err)) from None
        raise
    print(f'genotype: {genotype}')
    for name, path in files.items():
        print(f'{name}: {path}')
    return 0
