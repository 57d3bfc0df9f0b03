"""A real process is stopped the ways runs die: SIGTERM (preemption) saves and exits cleanly; SIGKILL loses
at most the steps since the last checkpoint; either way the resumed run equals the uninterrupted one."""

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from hytron.train.metrics import read_metrics
from hytron.train.pretrain import pretrain
from tests.train.conftest import tiny_recipe

STEPS = 30


def _losses(out):
    return {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r}


def _start(recipe_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "hytron", "pretrain", str(recipe_path), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_step(out, step, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (out / "metrics.jsonl").exists() and max(_losses(out) or {0: 0}) >= step:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise TimeoutError(f"run did not reach step {step}")


@pytest.fixture(scope="module")
def uninterrupted(packed_tinyweb, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    pretrain(tiny_recipe(packed_tinyweb, out, steps=STEPS, checkpoint_every=5, eval_every=0), progress=False)
    return _losses(out)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_killed_process_resumes_to_the_uninterrupted_losses(how, uninterrupted, packed_tinyweb, tmp_path):
    out = tmp_path / "run"
    cfg = tiny_recipe(packed_tinyweb, out, steps=STEPS, checkpoint_every=5, eval_every=0)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(cfg.to_dict()))
    proc = _start(recipe)
    _wait_for_step(out, 12, proc)
    proc.send_signal(getattr(signal, how))
    _, err = proc.communicate(timeout=120)
    if how == "SIGTERM":
        assert proc.returncode == 130, err[-2000:]  # clean exit, told the user it was interrupted
        latest = (out / "checkpoints" / "latest").read_text().strip()
        assert int(latest.split("-")[1]) >= 12  # saved where it stopped, not only at the last periodic one
    else:
        assert proc.returncode == -signal.SIGKILL
    pretrain(cfg, progress=False)
    assert _losses(out) == uninterrupted
