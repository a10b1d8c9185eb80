"""`symexp collect | plot | claims`: from run directories to tidy tables, figures and the claim ledger.

    symexp collect results/runs/quick/fig1_left -o results/tables/fig1_left.parquet
    symexp plot fig1_left            # reads results/tables/fig1_left.parquet only
    symexp claims                    # every figure's checks -> results/claims.csv
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from symexp import plots
from symexp.results import CollectError, collect, write_parquet, write_text

RESULTS = Path("results")


def cmd_collect(args) -> int:
    frames = []
    for d in args.sweep_dirs:
        try:
            frames.append(collect(Path(d)))
        except CollectError as e:
            print(f"symexp collect: {e}", file=sys.stderr)
            return 2
    table = pd.concat(frames, ignore_index=True)
    out = Path(args.out) if args.out else Path(args.sweep_dirs[0]) / "table.parquet"
    write_parquet(out, table)
    unfinished = [u for f in frames for u in f.attrs.get("unfinished", [])]
    print(f"symexp collect: {table['job'].nunique()} jobs, {table['member'].nunique()} member ids, "
          f"{len(table)} rows -> {out}")
    if unfinished:
        print(f"symexp collect: left out {len(unfinished)} unfinished job(s): {'; '.join(unfinished)}", file=sys.stderr)
    return 0


def read_table(tables: Path, figure: str) -> pd.DataFrame:
    path = tables / f"{figure}.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no table; run the experiment and `symexp collect` it first")
    return pd.read_parquet(path)


def cmd_plot(args) -> int:
    names = list(plots.FIGURES) if args.figure == "all" else [args.figure]
    for name in names:
        if name not in plots.FIGURES:
            print(f"symexp plot: unknown figure {name!r}; allowed: all, {', '.join(plots.FIGURES)}", file=sys.stderr)
            return 2
        try:
            table = read_table(Path(args.tables), name)
        except FileNotFoundError as e:
            print(f"symexp plot: {e}", file=sys.stderr)
            return 2
        for path in plots.FIGURES[name].draw(table, Path(args.out)):
            print(path)
    return 0


def cmd_claims(args) -> int:
    rows = []
    for name, fig in plots.FIGURES.items():
        try:
            table = read_table(Path(args.tables), name)
        except FileNotFoundError as e:
            print(f"symexp claims: skipping {name}: {e}", file=sys.stderr)
            continue
        rows.extend(dict(figure=name, **r) for r in fig.claims(table))
    ledger = pd.DataFrame(rows, columns=["claim", "check", "figure", "statement", "measured", "threshold", "passed"])
    write_text(Path(args.out), ledger.to_csv(index=False))
    print(ledger[["claim", "check", "measured", "threshold", "passed"]].to_string(index=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="symexp", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="gather every job's rows of one or more sweep dirs into one tidy table")
    c.add_argument("sweep_dirs", nargs="+")
    c.add_argument("-o", "--out", help="output parquet (default: <first sweep dir>/table.parquet)")
    c.set_defaults(fn=cmd_collect)
    pl = sub.add_parser("plot", help="draw a figure from its collected table")
    pl.add_argument("figure", help=f"all | {' | '.join(plots.FIGURES)}")
    pl.add_argument("--tables", default=str(RESULTS / "tables"))
    pl.add_argument("--out", default=str(RESULTS / "figures"))
    pl.set_defaults(fn=cmd_plot)
    cl = sub.add_parser("claims", help="evaluate every figure's claims into the ledger")
    cl.add_argument("--tables", default=str(RESULTS / "tables"))
    cl.add_argument("--out", default=str(RESULTS / "claims.csv"))
    cl.set_defaults(fn=cmd_claims)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
