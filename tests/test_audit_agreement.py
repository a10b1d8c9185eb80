"""make reproduce's audit beside the claims: on a real (tiny) transformer job, the audit's per-head tau-rank
equals the engine's logged one, at the smallest and the largest weight decay; a wrong threshold shows."""
from __future__ import annotations

import yaml

from symexp.audit.agreement import agreement
from symexp.run import run_job

TINY = ["experiment=transformer", "train.steps=30", "train.eval_every=30", "ensemble.weight_decays=[0.0,0.01,1.0]",
        "model.n_layer=1", "model.d_model=32", "data.context=16", "data.eval_windows=8"]


def test_audit_agrees_with_the_logged_ranks_and_notices_a_changed_threshold(make_cfg, tmp_path):
    job = tmp_path / "job"
    run_job(make_cfg(*TINY), job, progress=False)
    _, table = agreement(job)
    assert set(table.weight_decay) == {0.0, 1.0} and len(table) == 2 * 4  # 2 members x 4 heads
    assert table.agree.all(), table.to_string()
    assert table.audit.min() < table.audit.max()  # wd = 1 switched directions off: a real comparison
    cfg = yaml.safe_load((job / "config.yaml").read_text())
    cfg["metrics"]["rank_atol"] = 0.5  # the audit now reads a different floor than the engine logged
    (job / "config.yaml").write_text(yaml.safe_dump(cfg))
    _, changed = agreement(job)
    assert len(changed) == len(table) and not changed.agree.any()
