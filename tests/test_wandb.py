"""The wandb mirror, read back from the offline run files (.wandb transaction logs) without network."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from symexp.wandb_sink import GuardedSink, NullSink, make_sink, spread_sample, summary_run

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LOGGER = {"name": "wandb", "project": "symexp-test", "entity": None, "mode": "offline"}
COLUMNS = {"experiment": "fig1_left", "job": "symmetry=rescaling", "symmetry": "rescaling", "breaking": "none",
           "model": "linear", "data": "regression", "batch_size": 0, "data.teacher": "sparse"}
TINY_DATA = ["data.n_train=100", "data.dim=10", "data.nonzero=3", "train.steps=20", "train.eval_every=10"]
CONFIG = {"name": "fig1_left", "ensemble": {"seeds": [0, 1], "weight_decays": [0.0, 0.2]}}


def grid(seeds, wds) -> list[dict]:
    return [dict(member=m, seed=s, weight_decay=wd, gamma=wd / 2, lr=0.05, label_noise=0.0)
            for m, (s, wd) in enumerate((s, wd) for s in seeds for wd in wds)]


def blocks_at(step: int, n: int) -> list:
    """Eval metrics whose values encode (step, member), so every number read back can be checked."""
    return [(step, "weight", "sparsity/frac_zero@0.001", [step + m / 10 for m in range(n)]),
            (step, "", "loss/train", [1.0 / (step + 1) + m for m in range(n)])]


def final_blocks(step: int, n: int, diverged: set[int]) -> list:
    return [(step, "weight", "ref/lasso/max_abs_diff", [1e-4 * m for m in range(n)]),
            (step, "", "status/diverged", [float(m in diverged) for m in range(n)])]


def records(path: Path):
    """Records of a .wandb file: wandb's LevelDB-style log (32 KiB blocks, 7-byte chunk headers)."""
    data, pos, partial = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # block trailer
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:  # zero padding up to the end of the block
            pos += left - 7 - length
            continue
        partial = chunk if kind in (1, 2) else partial + chunk
        if kind in (1, 4):
            yield wandb_internal_pb2.Record.FromString(partial)


def fold(items) -> dict:
    """key/value_json items (config, summary, history) -> a dict; nested keys become nested dicts."""
    out = {}
    for item in items:
        path = [item.key] if item.key else list(item.nested_key)
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = json.loads(item.value_json)
    return out


def read_run_file(path: Path) -> dict:
    run = {"config": {}, "history": [], "summary": {}, "exit": None}
    for rec in records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            run.update(id=r.run_id, group=r.run_group, job_type=r.job_type, name=r.display_name)
            run["config"].update(fold(r.config.update))
        elif kind == "config":
            run["config"].update(fold(rec.config.update))
        elif kind == "history":
            run["history"].append(fold(rec.history.item))
        elif kind == "summary":
            run["summary"].update(fold(rec.summary.update))
        elif kind == "exit":
            run["exit"] = rec.exit.exit_code
    return run


def read_runs(wandb_dir: Path, timeout_s: float = 10.0) -> dict[str, list[dict]]:
    """run id -> its files in start order (a resumed run has one file per process). wandb-core closes a
    run's file shortly after finish() returns, so wait until every file holds its exit record."""
    deadline = time.monotonic() + timeout_s
    while True:
        files = [read_run_file(f) for f in sorted(Path(wandb_dir).glob("offline-run-*/run-*.wandb"))]
        if all(f["exit"] is not None for f in files) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    runs = defaultdict(list)
    for run in files:
        runs[run["id"]].append(run)
    return dict(runs)


def metric_rows(run: dict) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.startswith("_")} | {"_step": row["_step"]}
            for row in run["history"]]


@pytest.fixture(autouse=True)
def quiet_offline_wandb(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))


def drive(out: Path, members: list[dict], steps=(0, 10, 20), diverged=frozenset(), logger=LOGGER,
          run_id="cafe0123", close=True):
    sink = make_sink(logger, CONFIG, members, COLUMNS, "quick/fig1_left", "symmetry=rescaling", out, run_id)
    for step in steps:
        sink.log(step, blocks_at(step, len(members)))
    sink.log(steps[-1], final_blocks(steps[-1], len(members), set(diverged)))
    if close:
        sink.close({"state": "diverged" if diverged else "done", "diverged": len(diverged), "wall_s": 1.0}, 0)
    return sink


def test_one_run_per_member_with_its_hyperparameters_and_final_summary(tmp_path):
    members = grid([0, 1], [0.0, 0.2])
    drive(tmp_path, members, diverged={3})
    runs = read_runs(tmp_path / "wandb")
    assert len(runs) == 4 and all(len(files) == 1 for files in runs.values())
    for files in runs.values():
        run = files[0]
        m = run["config"]["member"]
        for key in ("seed", "weight_decay", "gamma", "lr", "label_noise"):
            assert run["config"][key] == members[m][key], key
        assert run["config"]["symmetry"] == "rescaling" and run["config"]["data.teacher"] == "sparse"
        assert run["config"]["config"]["ensemble"]["weight_decays"] == [0.0, 0.2]
        assert run["group"] == "quick/fig1_left" and run["job_type"] == "symmetry=rescaling"
        rows = metric_rows(run)
        assert [r["_step"] for r in rows] == [0, 10, 20]
        assert set(rows[-1]) == {"_step", "weight/sparsity/frac_zero@0.001", "loss/train",
                                 "weight/ref/lasso/max_abs_diff", "status/diverged"}
        assert rows[1]["weight/sparsity/frac_zero@0.001"] == pytest.approx(10 + m / 10)
        summary = run["summary"]
        assert summary["loss/train"] == pytest.approx(1 / 21 + m)
        assert summary["weight/ref/lasso/max_abs_diff"] == pytest.approx(1e-4 * m)
        assert summary["status"] == ("diverged" if m == 3 else "done")
        assert run["exit"] == 0


def test_resumed_job_reopens_the_same_runs_and_logs_no_step_twice(tmp_path):
    members = grid([0], [0.0, 0.2])
    first = make_sink(LOGGER, CONFIG, members, COLUMNS, "quick/fig1_left", "j", tmp_path, "beef4567")
    for step in (0, 10):
        first.log(step, blocks_at(step, 2))
    first.close(None, exit_code=1)  # the runner's finally block of a killed job
    drive(tmp_path, members, steps=(10, 20), run_id="beef4567")  # resumed from the checkpoint at step 10
    runs = read_runs(tmp_path / "wandb")
    assert len(runs) == 2
    for files in runs.values():
        assert len(files) == 2 and files[0]["exit"] == 1 and files[1]["exit"] == 0
        steps = [r["_step"] for f in files for r in metric_rows(f)]
        assert steps == [0, 10, 20]
        assert files[1]["summary"]["status"] == "done"


def test_a_new_config_in_the_same_directory_starts_new_runs(tmp_path):
    members = grid([0], [0.0])
    drive(tmp_path, members, run_id="aaaa")
    drive(tmp_path, members, run_id="bbbb")
    assert len(read_runs(tmp_path / "wandb")) == 2


def test_above_the_limit_one_job_run_holds_the_members_table(tmp_path):
    members = grid([0, 1, 2], [0.0, 0.2, 0.6])
    logger = {**LOGGER, "max_member_runs": 4, "sampled_member_runs": 3}
    drive(tmp_path, members, diverged={4}, logger=logger)
    runs = {files[0]["config"]["kind"] + str(files[0]["config"].get("member", "")): files[0]
            for files in read_runs(tmp_path / "wandb").values()}
    sample = spread_sample(members, 3)
    assert sorted(runs) == sorted(["job"] + [f"member{m}" for m in sample])
    job = runs["job"]
    assert job["config"]["sampled_members"] == sample and job["summary"]["diverged"] == 1
    table_files = list(tmp_path.glob("wandb/offline-run-*/files/media/table/members_*.table.json"))
    assert len(table_files) == 1
    table = json.loads(table_files[0].read_text())
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert [r["member"] for r in rows] == list(range(9))
    for r in rows:
        m = r["member"]
        assert r["weight_decay"] == members[m]["weight_decay"] and r["seed"] == members[m]["seed"]
        assert r["loss/train"] == pytest.approx(1 / 21 + m)
        assert r["status"] == ("diverged" if m == 4 else "done")


def test_spread_sample_covers_both_ends_of_the_grid():
    members = grid(range(16), [0.0, 0.1, 0.2, 0.4])
    sample = spread_sample(members, 5)
    wds = [members[m]["weight_decay"] for m in sample]
    assert len(sample) == 5 and min(wds) == 0.0 and max(wds) == 0.4


def test_wandb_failures_never_raise_into_the_job(tmp_path, capsys):
    members = grid([0], [0.0, 0.2])
    raise_ = lambda err: lambda *a, **k: (_ for _ in ()).throw(err)  # noqa: E731
    with pytest.MonkeyPatch.context() as mp:  # a broken install
        mp.setitem(sys.modules, "wandb", None)
        assert isinstance(drive(tmp_path / "a", members), NullSink)
    (tmp_path / "b").mkdir()  # an unwritable wandb directory
    (tmp_path / "b" / "wandb").write_text("a file where the wandb directory should be")
    assert isinstance(drive(tmp_path / "b", members), NullSink)
    with pytest.MonkeyPatch.context() as mp:  # online without network ends like this after wandb's timeout
        mp.setattr(wandb, "init", raise_(RuntimeError("no network")))
        assert isinstance(drive(tmp_path / "c", members), NullSink)
    # a failure mid-job (disk full): the sink goes quiet, finishes its runs, and close() still returns
    sink = drive(tmp_path / "d", members, steps=(0,), close=False)
    assert isinstance(sink, GuardedSink)
    with pytest.MonkeyPatch.context() as mp:
        for run in sink.sink.runs.values():
            mp.setattr(run, "log", raise_(OSError(28, "No space left on device")))
        sink.log(10, blocks_at(10, 2))
        sink.log(20, blocks_at(20, 2))
        sink.close({"state": "done"}, 0)
    lines = [line for line in capsys.readouterr().err.splitlines() if "wandb mirror off" in line]
    assert len(lines) == 4, lines
    assert "ModuleNotFoundError" in lines[0] and "no network" in lines[2] and "No space left" in lines[3]
    assert all(f["exit"] == 1 for files in read_runs(tmp_path / "d" / "wandb").values() for f in files)


def png(path: Path, color) -> Path:
    from PIL import Image

    Image.new("RGB", (8, 6), color).save(path)
    return path


def test_summary_run_carries_every_figure_and_the_claim_ledger(tmp_path):
    ledger = tmp_path / "claims.csv"
    ledger.write_text("claim,check,measured,threshold,passed\nC1,support,0.0,0.0,True\nC2,rank,3.5,2.0,False\n")
    figures = [png(tmp_path / "fig1_left.png", "red"), png(tmp_path / "dcs.png", "blue"), tmp_path / "dcs.pdf"]
    software = {"python": "3.11", "torch": "2.13.0", "device": "CPU: test"}
    summary_run(LOGGER, "quick", ledger, figures, software)
    runs = read_runs(tmp_path / "wandb")
    assert len(runs) == 1
    (run,) = next(iter(runs.values()))
    assert run["config"]["software"] == software and run["config"]["scale"] == "quick"
    logged = run["history"][0]
    assert {k for k in logged if k.startswith("figures/")} == {"figures/fig1_left", "figures/dcs"}
    assert all(logged[k]["_type"] == "image-file" for k in ("figures/fig1_left", "figures/dcs"))
    assert len(list(tmp_path.glob("wandb/offline-run-*/files/media/images/figures/*.png"))) == 2
    table = json.loads(next(tmp_path.glob("wandb/offline-run-*/files/" + logged["claims"]["path"])).read_text())
    assert table["columns"] == ["claim", "check", "measured", "threshold", "passed"]
    assert [row[:2] for row in table["data"]] == [["C1", "support"], ["C2", "rank"]]
    assert run["summary"]["checks_passed"] == 1


def test_logger_none_or_disabled_never_imports_wandb(tmp_path):
    code = (
        "import sys; from pathlib import Path; from symexp.wandb_sink import make_sink, summary_run\n"
        "for cfg in ({'name': 'none'}, {'name': 'wandb', 'mode': 'disabled'}):\n"
        f"    s = make_sink(cfg, {{}}, [{{'member': 0}}], {{}}, 'g', 'j', Path({str(tmp_path)!r}), 'id')\n"
        "    s.log(0, [(0, '', 'loss/train', [1.0])]); s.close({'state': 'done'}, 0)\n"
        "    summary_run(cfg, 'quick', Path('x.csv'), [], {})\n"
        "assert 'wandb' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    assert not (tmp_path / "wandb").exists()


def wandb_own_summary(run_file: Path) -> dict:
    """wandb's own reader of a .wandb file (`wandb leet inspect`, wandb >= 0.31): config, summary, state."""
    wandb_cli = Path(sys.executable).with_name("wandb")
    out = subprocess.run([str(wandb_cli), "leet", "inspect", "--summary", "--json", str(run_file)],
                         capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout)


def test_a_real_job_mirrors_its_parquet_table(tmp_path):
    """End to end through the Hydra entry point: runs, configs and summaries match metrics.parquet."""
    import pandas as pd
    from conftest import cli_env

    cmd = [sys.executable, "-m", "symexp.run", "experiment=fig1_left", "logger=wandb", "compile=false",
           *TINY_DATA, "ensemble.seeds=[0]", "ensemble.weight_decays=[0,0.02]", f"paths.results={tmp_path}"]
    subprocess.run(cmd, cwd=ROOT, env=cli_env(), check=True, capture_output=True)
    (job_dir,) = [p.parent for p in tmp_path.glob("runs/quick/fig1_left/single/*/metrics.parquet")]
    table = pd.read_parquet(job_dir / "metrics.parquet")
    final = table[table.step == table.step.max()]
    run_files = sorted(job_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(run_files) == len(read_runs(job_dir / "wandb")) == table.member.nunique() == 2
    for run_file in run_files:
        run = wandb_own_summary(run_file)
        assert run["state"] == "finished" and run["summary"]["status"] == "done"
        m = run["config"]["member"]
        mine = final[final.member == m]
        assert run["config"]["weight_decay"] == mine.weight_decay.iloc[0] and run["config"]["seed"] == 0
        assert run["config"]["experiment"] == "fig1_left" and run["config"]["config"]["name"] == "fig1_left"
        expected = {(f"{r.layer}/{r.metric}" if r.layer else r.metric): r.value for r in mine.itertuples()}
        assert {k: run["summary"][k] for k in expected} == pytest.approx(expected, nan_ok=True)
        (history_of_mine,) = [files[0]["history"] for files in read_runs(job_dir / "wandb").values()
                              if files[0]["config"]["member"] == m]
        assert {k for row in history_of_mine for k in row if not k.startswith("_")} == set(expected)


def test_a_job_with_broken_wandb_still_writes_its_complete_table(make_cfg, tmp_path, monkeypatch, capsys):
    from symexp.run import run_job

    import pandas as pd

    monkeypatch.setattr(wandb, "init", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left")))
    status = run_job(make_cfg("experiment=fig1_left", "logger=wandb", *TINY_DATA, "ensemble.seeds=[0,1]",
                              "ensemble.weight_decays=[0,0.02]"), tmp_path / "j", progress=False)
    assert status["state"] == "done" and "wandb mirror off" in capsys.readouterr().err
    table = pd.read_parquet(tmp_path / "j" / "metrics.parquet")
    per_step = table.groupby("step").member.nunique()
    assert list(per_step.index) == [0, 10, 20] and (per_step == 4).all()
    assert {"status/diverged", "ref/lasso/max_abs_diff"} <= set(table[table.step == 20].metric)
