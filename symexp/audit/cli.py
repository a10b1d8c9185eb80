"""`symexp audit [PATH] --model MODEL`: audit a model (as built, or with a checkpoint's weights) or a symexp job.

    symexp audit --model path/to/nets.py:Net --model-kwargs '{"width": 64}'   # the model as built (random init)
    symexp audit ckpt.safetensors --model my_pkg.models:Net                  # with a checkpoint's weights
    symexp audit --model hf:path/to/gpt2-folder      # its config.json, and its model.safetensors if there
    symexp audit model.bin --model hf:config.json    # transformers' model with local weights
    symexp audit --model timm:resnet50 --input-shape 2,3,224,224
    symexp audit results/runs/quick/fig1_right/<job>                          # every member of a symexp job
    symexp audit ... --out DIR --threshold dead_tau=0.05 --verify

MODEL: pkg.module:Factory | path/to/file.py:Factory | hf:<config.json or folder> (needs transformers) |
timm:<name> (needs timm). --model-kwargs: a JSON object, or @file.json / @file.yaml holding one (a factory's
keyword arguments; hf: config fields; timm: create_model's). Nothing is downloaded.
Checkpoints: .safetensors (read from its header, no package needed), or .pt/.pth/.bin read with
torch.load(weights_only=True): a state_dict, alone or under 'state_dict'/'model'; never a pickled model.

--verify (default up to 2M parameters) checks every finding on the model: a random element of its group
applied to a copy changes the outputs by at most the tolerance, or the summary names it as a bug of the audit.
Writes DIR/audit.csv, audit.parquet, audit.png and summary.txt (default DIR: <job>/audit, <checkpoint>.audit/
beside the file, or ./<model>.audit), and prints the summary. Every bad input is one line on stderr and
exit status 2, before anything is written.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from symexp.audit.errors import AuditError, CheckpointError

VERIFY_MAX = 2_000_000  # parameters up to which --verify is the default (ResNet18: audit 1.3 CPU-s, verify 8.6)


def add_subparser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("audit", help="find a model's mirror symmetries and measure the structure they induced",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", nargs="?", help="a checkpoint (.safetensors, .pt, .pth, .bin) or a symexp job directory; "
                                           "without it, the model as --model builds it")
    p.add_argument("--model", help="pkg.module:Factory, path/to/file.py:Factory, hf:<config.json or folder>, "
                                   "timm:<name> (checkpoints and bare models)")
    p.add_argument("--model-kwargs", metavar="JSON|@FILE", help="keyword arguments for --model: a JSON object, or "
                                                                "@file.json / @file.yaml holding one")
    p.add_argument("--out", help="output directory (default: <job>/audit, <checkpoint>.audit or ./<model>.audit)")
    p.add_argument("--input-shape", help="comma-separated shape of random example inputs, e.g. 64,3,32,32, or "
                                         "2,128 token ids for a model that starts with an embedding (adds units "
                                         "never active on them)")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction,
                   help="apply a random element of every finding's group to a copy of the model and compare outputs "
                        f"(default: on up to {VERIFY_MAX:,} parameters; ResNet18's 11M took 6.6x the audit)")
    p.add_argument("--threshold", action="append", default=[], metavar="NAME=VALUE",
                   help="override a threshold (dead_tau, unit_tol, rank_tau, rank_atol, active_atol, origin_rtol)")
    p.set_defaults(fn=run)
    return p


def run(args) -> int:
    """Validate everything (torch is imported only once the cheap checks pass), audit, then write; raises
    symexp.errors.UserError (one line) before writing anything."""
    from symexp.audit import models

    th = _thresholds(args.threshold)
    path = Path(args.path) if args.path else None
    if path is not None and not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path is not None and path.is_dir():
        if args.model or args.input_shape or args.model_kwargs or args.verify:
            raise AuditError("--model/--model-kwargs/--input-shape/--verify are for checkpoints and models; a job "
                             "directory names its model in config.yaml")
        from symexp.audit.jobs import audit_job

        return _write(audit_job(path, **th), Path(args.out) if args.out else path / "audit", str(path))
    if not args.model:
        raise AuditError(f"{path or 'symexp audit'}: needs --model ({models.FORMS}) to build the model")
    spec = models.parse(args.model, args.model_kwargs)
    dims = _dims(args.input_shape)
    from symexp.audit.checkpoints import load_into, read_tensors  # torch: the checkpoint and model need it

    weights = path or spec.weights()
    sd = read_tensors(weights) if weights else None
    model = spec.build()
    if sd is not None:
        load_into(model, sd, weights, args.model)
    from symexp.audit.core import audit  # pandas, scipy, the audit itself

    verify = args.verify if args.verify is not None else sum(p.numel() for p in model.parameters()) <= VERIFY_MAX
    df = audit(model, _inputs(dims, model), verify=verify, **th)
    if weights is None:
        df.attrs["notes"].append("no checkpoint: the weights as the model's constructor made them")
    out = Path(args.out) if args.out else path.with_name(path.name + ".audit") if path else _default_out(spec)
    return _write(df, out, str(weights or args.model))


def _default_out(spec) -> Path:
    """./<model>.audit: nets.Net.audit, my_pkg.models.Net.audit, gpt2.audit (an hf: folder), resnet50.audit."""
    target = Path(spec.target.rstrip("/"))
    name = target.parent.name if target.name == "config.json" else target.stem if spec.scheme == "file" else target.name
    return Path(re.sub(r"[^\w.-]+", "_", ".".join(filter(None, [name or spec.scheme, spec.attr]))) + ".audit")


def _write(df, out: Path, source: str) -> int:
    from symexp.audit.report import write_report

    for p in write_report(df, out, source):
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


def _dims(shape: str | None) -> list[int] | None:
    if not shape:
        return None
    try:
        dims = [int(d) for d in shape.split(",")]
    except ValueError:
        dims = []
    if not dims or any(d < 1 for d in dims):
        raise AuditError(f"--input-shape {shape!r}: allowed: positive integers separated by commas, e.g. 64,3,32,32")
    return dims


def _inputs(dims: list[int] | None, model):
    """Random inputs of that shape: token ids when the first layer is an embedding, else normal floats."""
    import torch

    if dims is None:
        return None
    gen = torch.Generator().manual_seed(0)
    first = next((m for m in model.modules() if next(m.parameters(recurse=False), None) is not None), None)
    if isinstance(first, torch.nn.Embedding):
        return torch.randint(0, first.num_embeddings, dims, generator=gen)
    p = next(model.parameters(), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    return torch.randn(*dims, generator=gen, dtype=dtype)


def main(argv: list[str] | None = None) -> int:
    """`python -m symexp.audit.cli ARGS` = `symexp audit ARGS`."""
    from symexp.cli import main as symexp_main

    return symexp_main(["audit", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
