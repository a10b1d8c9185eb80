"""`symexp collect | plot | claims`: from run directories to tidy tables, figures and the claim ledger.

    symexp collect results/runs/quick/fig1_left -o results/tables/fig1_left.parquet
    symexp plot fig1_left            # reads results/tables/fig1_left.parquet only
    symexp plot all                  # every table of the registry that has a figure
    symexp claims                    # every table's checks -> results/claims.csv

The tables, their figures and their claims come from the experiment registry (symexp.experiments):
the `report:` block of each configs/experiment/*.yaml. `--configs DIR` (repeatable) adds the
experiments of DIR/experiment/*.yaml, e.g. ones defined outside this package.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from symexp.errors import UserError

RESULTS = Path("results")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# pandas, torch and the registry are imported by the commands that use them: `symexp audit` with a bad
# argument answers in a fraction of a second instead of after seconds of imports


def cmd_collect(args) -> int:
    import pandas as pd

    from symexp.results import CollectError, collect, write_parquet

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


def table_path(tables: Path, name: str) -> Path:
    return Path(tables) / f"{name}.parquet"


def read_table(tables: Path, name: str) -> pd.DataFrame:
    import pandas as pd

    path = table_path(tables, name)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no table; run the experiment and `symexp collect` it first")
    return pd.read_parquet(path)


def cmd_plot(args) -> int:
    from symexp import experiments

    registry = experiments.discover(args.configs)
    with_figure = [t for t in registry.tables.values() if t.plot]
    if args.table == "all":
        tables = with_figure
    elif registry.table(args.table).plot:
        tables = [registry.table(args.table)]
    else:
        raise experiments.RegistryError(f"table {args.table!r} has no figure (report.plot is null); tables with one: "
                                        f"{', '.join(t.name for t in with_figure)}")
    for table in tables:
        draw = experiments.draw_function(table)
        try:
            rows = read_table(Path(args.tables), table.name)
        except FileNotFoundError as e:
            print(f"symexp plot: {e}", file=sys.stderr)
            return 2
        for path in draw(rows, Path(args.out)):
            print(path)
    return 0


def ledger_rows(table: experiments.Table, rows: pd.DataFrame) -> tuple[list[dict], list[str]]:
    """The ledger rows of every check of `table` that applies, settled against their premises (a premise
    that could not be measured leaves its rows undecided), and one line per check that could not be measured."""
    from symexp import experiments
    from symexp.claims import ClaimError, settle

    out, problems = [], []
    checks = experiments.checks(table)
    for check in checks:
        try:
            row = check.row(rows, table.name)
        except ClaimError as e:
            problems.append(str(e))
            continue
        if row is not None:
            out.append(row)
    return settle(out, checks), problems


def cmd_claims(args) -> int:
    import pandas as pd

    from symexp import experiments
    from symexp.claims import LEDGER_COLUMNS
    from symexp.results import write_text

    registry = experiments.discover(args.configs)
    rows, problems = [], []
    for table in registry.tables.values():
        if not table.claims:
            continue
        if not table_path(Path(args.tables), table.name).exists():
            print(f"symexp claims: skipping {table.name}: no table {table_path(Path(args.tables), table.name)}",
                  file=sys.stderr)
            continue
        found, failed = ledger_rows(table, read_table(Path(args.tables), table.name))
        rows += found
        problems += failed
    ledger = pd.DataFrame(rows, columns=LEDGER_COLUMNS)
    write_text(Path(args.out), ledger.to_csv(index=False))
    print(ledger[["claim", "check", "kind", "measured", "op", "threshold", "passed"]].to_string(index=False))
    for p in problems:
        print(f"symexp claims: {p}", file=sys.stderr)
    return 2 if problems else 0


def _registry_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--configs", action="append", default=[], metavar="DIR",
                   help="a config dir whose experiment/*.yaml join the registry (repeatable)")
    p.add_argument("--tables", default=str(RESULTS / "tables"))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="symexp", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="gather every job's rows of one or more sweep dirs into one tidy table")
    c.add_argument("sweep_dirs", nargs="+")
    c.add_argument("-o", "--out", help="output parquet (default: <first sweep dir>/table.parquet)")
    c.set_defaults(fn=cmd_collect)
    pl = sub.add_parser("plot", help="draw a table's figure from the collected table alone")
    pl.add_argument("table", help="a table of the registry, or all")
    _registry_args(pl)
    pl.add_argument("--out", default=str(RESULTS / "figures"))
    pl.set_defaults(fn=cmd_plot)
    cl = sub.add_parser("claims", help="evaluate every table's checks into the ledger")
    _registry_args(cl)
    cl.add_argument("--out", default=str(RESULTS / "claims.csv"))
    cl.set_defaults(fn=cmd_claims)
    from symexp.audit.cli import add_subparser  # argparse only: `audit` imports torch when it needs it

    for each in (p, add_subparser(sub)):
        each.error = _one_line_error(each)
    return p


def _one_line_error(p: argparse.ArgumentParser):
    """argparse's usage block and message as one line, exit status 2, like every other bad input."""
    return lambda message: p.exit(2, f"{p.prog}: {message} (see {p.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except UserError as e:
        if os.environ.get("SYMEXP_DEBUG") == "1":
            raise
        message = re.sub(r"\s*\n\s*", " ", ANSI.sub("", str(e)).strip())  # one plain line, whatever a library wrote
        print(f"symexp {args.cmd}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
