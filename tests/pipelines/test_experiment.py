"""The experiment runner under the claims: seeds reused only under the settings they were made with, and
parallel seed processes that share the machine's threads out."""

import json

import pytest
import torch

from hytron.claims import nvfp4
from hytron.pipelines import experiment

PROBE = "hytron.claims.probe"  # a stand-in claim module put in sys.modules by the test that runs it


def test_run_seeds_reuses_records_made_with_the_same_settings(tmp_path):
    s = nvfp4.QUICK
    for seed, value in ((0, 1.5), (1, 2.5)):
        path = tmp_path / f"seed{seed}" / "record.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"settings": experiment._settings_dict(s), "value": value}))
    records = experiment.run_seeds("hytron.claims.nvfp4", tmp_path, s, [0, 1], log=lambda m: None)
    assert [records[k]["value"] for k in (0, 1)] == [1.5, 2.5]
    with pytest.raises(ValueError, match="--jobs"):
        experiment.run_seeds("hytron.claims.nvfp4", tmp_path, s, [0], jobs=0)


def test_run_seeds_starts_afresh_only_work_made_with_other_settings(tmp_path, monkeypatch):
    """A seed's data and checkpoints are resumed only under the settings they were made with: a finished 6-step run
    continued under steps=8, or a crawl generated at another size, would otherwise pass for the new settings."""
    import sys
    import types

    seen = {}

    def run_seed(out, settings, seed, log=print):  # a claim's seed: notes what its work folder already held
        work = out / f"seed{seed}"
        seen[seed] = sorted(p.name for p in work.iterdir())
        (work / "data.txt").write_text(f"steps {settings.steps}")
        return {"value": settings.steps}

    monkeypatch.setitem(sys.modules, PROBE, types.SimpleNamespace(run_seed=run_seed))
    old, new = experiment.run_shape(steps=6), experiment.run_shape(steps=8)
    quiet = {"log": lambda m: None}
    experiment.run_seeds(PROBE, tmp_path, old, [0, 1], **quiet)
    (tmp_path / "seed1" / "record.json").unlink()  # seed 1 stopped half-way under the new settings
    (tmp_path / "seed1" / "settings.json").write_text(json.dumps(experiment._settings_dict(new)))
    (tmp_path / "seed2").mkdir()  # work of unknown settings
    (tmp_path / "seed2" / "data.txt").write_text("?")
    seen.clear()
    records = experiment.run_seeds(PROBE, tmp_path, new, [0, 1, 2], **quiet)
    assert seen[0] == ["settings.json"]  # other settings: the 6-step work was deleted, not resumed
    assert seen[1] == ["data.txt", "settings.json"]  # same settings, no record yet: resumed from its work
    assert seen[2] == ["settings.json"]
    assert [records[k]["value"] for k in (0, 1, 2)] == [8, 8, 8]
    seen.clear()
    assert experiment.run_seeds(PROBE, tmp_path, new, [0, 1, 2], **quiet) == records and not seen  # reused


def test_parallel_seeds_share_the_threads_out_unless_told():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        assert experiment.worker_threads(2) == 2 and experiment.worker_threads(8) == 1  # never 2 x 4 threads on 4 cores
        assert experiment.worker_threads(2, threads=3) == 3  # --threads is per process
    finally:
        torch.set_num_threads(before)

