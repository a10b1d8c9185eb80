"""`symexp audit PATH`: audit a checkpoint (with the class that builds it) or a symexp job directory.

    symexp audit path/to/checkpoint.pt --model my_pkg.models:Net [--input-shape 64,3,32,32]
    symexp audit results/runs/quick/fig1_right/<job>        # every member of the job
    symexp audit ... --out DIR --threshold dead_tau=0.05

Writes DIR/audit.csv, audit.parquet, audit.png and summary.txt (default DIR: <job>/audit, or
<checkpoint>.audit/ beside the file), and prints the summary. Bad input is one line, nothing written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from symexp.audit.core import audit, thresholds
from symexp.audit.errors import AuditError, CheckpointError
from symexp.audit.jobs import audit_job, import_model, load_into, read_tensors
from symexp.audit.report import write_report


def add_subparser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("audit", help="find a model's mirror symmetries and measure the structure they induced",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="a state_dict checkpoint (.pt) or a symexp job directory")
    p.add_argument("--model", help="pkg.module:Class building the checkpoint's model (checkpoints only)")
    p.add_argument("--out", help="output directory (default: <job>/audit or <checkpoint>.audit)")
    p.add_argument("--input-shape", help="comma-separated shape of random example inputs, e.g. 64,3,32,32 "
                                         "(adds units never active on them)")
    p.add_argument("--threshold", action="append", default=[], metavar="NAME=VALUE",
                   help="override a threshold (dead_tau, unit_tol, rank_tau, rank_atol, active_atol, origin_rtol)")
    p.set_defaults(fn=run)
    return p


def run(args) -> int:
    """Validate everything, audit, then write; raises symexp.errors.UserError (one line) before writing anything."""
    path = Path(args.path)
    th = _thresholds(args.threshold)
    thresholds(**th)  # a bad name or value fails before any file is read
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_dir():
        if args.model or args.input_shape:
            raise AuditError("--model/--input-shape are for checkpoint files; a job directory names its model "
                             "in config.yaml")
        df, out = audit_job(path, **th), Path(args.out) if args.out else path / "audit"
    else:
        if not args.model:
            raise AuditError(f"{path}: a checkpoint needs --model pkg.module:Class to build its model")
        sd = read_tensors(path)
        model = import_model(args.model)
        load_into(model, sd, path, args.model)
        df = audit(model, _inputs(args.input_shape, model), **th)
        out = Path(args.out) if args.out else path.with_name(path.name + ".audit")
    for p in write_report(df, out, str(path)):
        print(p)
    print((out / "summary.txt").read_text(), end="")
    return 0


def _thresholds(items: list[str]) -> dict:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name] = float(value) if sep else None
        except ValueError:
            out[name] = None
        if out[name] is None:
            raise AuditError(f"--threshold {item!r}: allowed form is NAME=NUMBER")
    return out


def _inputs(shape: str | None, model: torch.nn.Module):
    if not shape:
        return None
    try:
        dims = [int(d) for d in shape.split(",")]
    except ValueError:
        dims = []
    if not dims or any(d < 1 for d in dims):
        raise AuditError(f"--input-shape {shape!r}: allowed: positive integers separated by commas, e.g. 64,3,32,32")
    p = next(model.parameters(), None)
    gen = torch.Generator().manual_seed(0)
    return torch.randn(*dims, generator=gen, dtype=p.dtype if p is not None and p.is_floating_point() else torch.float32)


def main(argv: list[str] | None = None) -> int:
    """`python -m symexp.audit.cli ARGS` = `symexp audit ARGS`."""
    from symexp.cli import main as symexp_main

    return symexp_main(["audit", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
