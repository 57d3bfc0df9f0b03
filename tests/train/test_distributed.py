"""torchrun with 2 CPU processes (gloo), DDP and FSDP2, matches the single-process run with the same global batch."""

import os
import subprocess
import sys

import pytest

from hytron.train.metrics import read_metrics
from hytron.train.pretrain import pretrain
from tests.train.conftest import tiny_recipe

STEPS = 4


def _write_recipe(path, data_path, out_dir, batch_size, distributed):
    import yaml

    cfg = tiny_recipe(data_path, out_dir, steps=STEPS, checkpoint_every=2, eval_every=0, distributed=distributed,
                      data={"path": str(data_path), "seq_len": 64, "batch_size": batch_size})
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def _torchrun(recipe, extra=()):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "hytron", "pretrain", str(recipe), "--no-progress", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def _losses(out):
    return [r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]


@pytest.fixture(scope="module")
def single(packed_tinyweb, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    pretrain(tiny_recipe(packed_tinyweb, out, steps=STEPS, checkpoint_every=2, eval_every=0,
                         data={"path": str(packed_tinyweb), "seq_len": 64, "batch_size": 8}), progress=False)
    return _losses(out)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_process_run_matches_single_process(mode, single, packed_tinyweb, tmp_path):
    recipe = _write_recipe(tmp_path / "r.yaml", packed_tinyweb, tmp_path / "run", 4, mode)
    _torchrun(recipe)
    losses = _losses(tmp_path / "run")
    assert len(losses) == len(single) == STEPS
    assert max(abs(a - b) for a, b in zip(losses, single)) <= 1e-5, (losses, single)


@pytest.mark.slow
def test_checkpoint_from_two_processes_resumes_in_one(single, packed_tinyweb, tmp_path):
    recipe = _write_recipe(tmp_path / "r.yaml", packed_tinyweb, tmp_path / "run", 4, "fsdp")
    _torchrun(recipe, ["--set", "steps=2"])  # writes its final checkpoint at step 2
    cfg = tiny_recipe(packed_tinyweb, tmp_path / "run", steps=STEPS, checkpoint_every=2, eval_every=0,
                      data={"path": str(packed_tinyweb), "seq_len": 64, "batch_size": 8})
    pretrain(cfg, progress=False)  # world size 1, global batch 8 as before
    assert max(abs(a - b) for a, b in zip(_losses(tmp_path / "run"), single)) <= 1e-5
