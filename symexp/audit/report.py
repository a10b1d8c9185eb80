"""What an audit writes: the tidy table (CSV and parquet), a one-page figure (per layer and symmetry,
the fraction of units, pairs' units or directions already on a mirror plane) and a short text summary."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from symexp.audit.spectra import SYMMETRY as SPECTRUM  # noqa: E402
from symexp.results import atomic_write, write_parquet, write_text  # noqa: E402

COLOURS = {"permutation": "tab:blue", "rescaling": "tab:orange", "sign": "tab:green", "rotation": "tab:red",
           "double_rotation": "tab:purple"}
# the structure each symmetry induces, as a fraction of what could carry it
STRUCTURE = {"permutation": ("units dead or duplicated", "independent_units", True),
             "rescaling": ("units at zero", "zero_units", False), "sign": ("units at zero", "zero_units", False),
             "rotation": ("directions switched off", "off_directions", False),
             "double_rotation": ("head directions switched off (QK and OV)", "off_directions", False)}


def structure_fractions(df: pd.DataFrame) -> pd.DataFrame:
    """Per member x layer x symmetry: the fraction of units / directions on a mirror plane, in [0, 1]."""
    parts = []
    for sym, (_, measure, complement) in STRUCTURE.items():
        rows = df[(df.symmetry == sym) & df.measure.str.endswith(measure) & df["of"].notna()].copy()
        if sym == "double_rotation":  # heads "<attn>.h<k>" summed into their attention layer
            rows["layer"] = rows.layer.str.replace(r"\.h\d+$", "", regex=True)
        g = rows.groupby(["member", "layer"], sort=False)[["value", "of"]].sum().reset_index()
        frac = g["value"] / g["of"].astype(float).where(g["of"] > 0)
        g["fraction"] = 1 - frac if complement else frac
        g["symmetry"] = sym
        parts.append(g[["member", "layer", "symmetry", "fraction"]])
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["member", "layer", "symmetry", "fraction"])


def draw(df: pd.DataFrame, path: Path, title: str) -> Path:
    """Horizontal bars: mean fraction over members, a line from the lowest to the highest member."""
    frac = structure_fractions(df)
    g = frac.groupby(["layer", "symmetry"], sort=False)["fraction"].agg(["mean", "min", "max"]).reset_index()
    fig, ax = plt.subplots(figsize=(8, min(22, 1.6 + 0.24 * max(len(g), 1))))
    for y, r in enumerate(g.itertuples()):
        ax.barh(y, r.mean, color=COLOURS[r.symmetry], height=0.7)
        if r.max > r.min:
            ax.plot([r.min, r.max], [y, y], color="black", lw=1)
    ax.set_yticks(range(len(g)), [f"{r.layer}  [{r.symmetry}]" for r in g.itertuples()], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction on a mirror plane (permutation: dead or duplicate units; rescaling/sign: units at 0;\n"
                  "rotation: directions off; double rotation: head directions off)", fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for s, c in COLOURS.items() if s in set(g.symmetry)]
    ax.legend(handles, [s for s in COLOURS if s in set(g.symmetry)], fontsize=7, loc="lower right")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=130, format="png"))
    plt.close(fig)
    return path


def summary(df: pd.DataFrame, source: str) -> str:
    """A few lines: how it was traced, what sits on mirror planes, what is unclassified."""
    members = df["member"].nunique()
    lines = [f"symexp audit of {source}: {members} member(s), {df.attrs.get('trace', 'traced')}"]
    lines += [f"  note: {n}" for n in df.attrs.get("notes", [])]
    spectra = df[df.symmetry == SPECTRUM]
    df = df[df.symmetry != SPECTRUM]
    counts = df[df["of"].notna() & (df.measure != "independent_units")]
    for (layer, sym), g in counts.groupby(["layer", "symmetry"], sort=False):
        hits = []
        for measure, m in g.groupby("measure", sort=False):
            lo, hi, of = int(m["count"].min()), int(m["count"].max()), int(m["of"].iloc[0])
            if hi > 0:
                hits.append(f"{measure} {lo if lo == hi else f'{lo}-{hi}'}/{of}")
        if hits:
            lines.append(f"  {sym:<15} {layer}: " + ", ".join(hits))
    if len(lines) == 1 + len(df.attrs.get("notes", [])):
        lines.append("  nothing sits on a mirror plane at these thresholds")
    classified = df[df.symmetry != "unclassified"]
    found = classified.layer.str.replace(r"\.(h\d+|heads)$", "", regex=True).groupby(classified.symmetry).nunique()
    lines.append("  symmetries found: " + ", ".join(f"{s} ({n} layers)" for s, n in found.items()))
    if len(spectra):
        lines.append(_spectra_line(spectra))
    un = df[(df.symmetry == "unclassified") & (df.member == df.member.min())]
    if len(un):
        lines.append(f"  unclassified: {len(un)} parameter tensor(s), {int(un.value.sum())} values "
                     f"({', '.join(un.layer.head(6))}{', ...' if len(un) > 6 else ''}); reasons in the table")
    return "\n".join(lines) + "\n"


def _spectra_line(spectra: pd.DataFrame) -> str:
    """Stable ranks at a glance, and every matrix whose tau-rank is below full in some member."""
    stable = spectra[spectra.measure.str.startswith("rank/stable")]
    low = stable.loc[stable.value.idxmin()] if stable.value.notna().any() else None
    line = f"  spectra of {spectra.layer.nunique()} weight matrices: stable rank median {stable.value.median():.3g}"
    if low is not None:
        line += f", lowest {low.value:.3g} ({low.layer})"
    tau = spectra[spectra.measure.str.startswith("rank/tau@") & spectra["of"].notna()]
    short = tau[tau["count"] < tau["of"]].groupby("layer", sort=False)
    below = [f"{layer} {g['count'].min()}/{g['of'].iloc[0]}" for layer, g in short]
    if below:
        line += f"; below full tau-rank: {', '.join(below[:6])}{', ...' if len(below) > 6 else ''}"
    return line


def write_report(df: pd.DataFrame, out_dir: Path, source: str) -> list[Path]:
    """audit.csv, audit.parquet, audit.png and summary.txt under `out_dir` (each written atomically)."""
    out_dir = Path(out_dir)
    text = summary(df, source)
    write_text(out_dir / "audit.csv", df.to_csv(index=False))
    write_parquet(out_dir / "audit.parquet", df)
    draw(df, out_dir / "audit.png", f"symexp audit: {source}")
    write_text(out_dir / "summary.txt", text)
    return [out_dir / n for n in ("audit.csv", "audit.parquet", "audit.png", "summary.txt")]
