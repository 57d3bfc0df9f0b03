"""The pipeline end to end on a small TinyWeb: worker count and executor do not change the output, a killed
run resumes to the same output without redoing finished shards, explain and the CLI work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hytron.cli import main
from hytron.data.pipeline import curate, explain
from hytron.data.writers import iter_records, shard_files


def _files(out: Path, kind: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in shard_files(out, kind)}


def test_small_run_accounts_for_everything(curated_small):
    out, m = curated_small
    assert m["shards"] > 8
    kept, removed = _files(out, "kept"), _files(out, "removed")
    assert len(kept) == len(removed) == m["shards"]
    assert m["counts"]["input"] == 2000 == m["counts"]["kept"] + m["counts"]["removed"]
    rec = next(iter_records(out, "kept"))
    assert set(rec) == {"id", "text", "source", "quality_bucket", "meta"} and rec["quality_bucket"] in range(5)
    assert not (out / ".work").exists() and (out / "quality" / "linear.npz").is_file()


def test_more_workers_give_identical_output(tinyweb_small, curated_small, tmp_path, make_config):
    out, _ = curated_small
    curate([tinyweb_small], tmp_path / "w2", make_config(workers=2), progress=False)
    assert _files(tmp_path / "w2", "kept") == _files(out, "kept")
    assert _files(tmp_path / "w2", "removed") == _files(out, "removed")


def test_ray_executor_gives_identical_kept_set(tinyweb_small, curated_small, tmp_path, make_config):
    pytest.importorskip("ray")
    out, _ = curated_small
    curate([tinyweb_small], tmp_path / "ray", make_config(kind="ray", workers=2), progress=False)
    assert _files(tmp_path / "ray", "kept") == _files(out, "kept")
    assert _files(tmp_path / "ray", "removed") == _files(out, "removed")


def test_killed_run_resumes_to_identical_output_without_redoing_shards(tinyweb_small, curated_small, tmp_path):
    out_ref, m_ref = curated_small
    cfg_path = tmp_path / "cfg.yaml"
    cfg = {"input": {"shard_bytes": 64_000}, "quality": {"sample_docs": 600}, "executor": {"workers": 1}}
    cfg_path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "hytron", "curate", str(tinyweb_small), "--out", str(out), "--config", str(cfg_path)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    half = m_ref["shards"] // 2
    deadline = time.time() + 120
    while time.time() < deadline and not (out / ".work" / "done" / f"stage-{half:05d}").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = sorted(p.name for p in (out / ".work" / "done").glob("stage-*"))
    assert 0 < len(done_before) < m_ref["shards"], "the run was not killed halfway"
    assert not (out / "manifest.json").exists()
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    todo = m_ref["shards"] - len(done_before)
    assert f"stage: {todo}/{todo} shards" in resumed.stderr  # finished shards were not redone
    assert _files(out, "kept") == _files(out_ref, "kept")
    assert _files(out, "removed") == _files(out_ref, "removed")


def test_changed_config_on_unfinished_run_is_refused(tinyweb_small, tmp_path, make_config):
    out = tmp_path / "out"
    (out / ".work").mkdir(parents=True)
    (out / ".work" / "plan.json").write_text(json.dumps({"fingerprint": "something else"}))
    with pytest.raises(ValueError, match="different inputs or config"):
        curate([tinyweb_small], out, make_config(), progress=False)


def test_explain_and_cli(tinyweb_small, curated_small, capsys):
    out, _ = curated_small
    removed = next(r for r in iter_records(out, "removed") if r["step"] == "heuristics")
    info = explain(out, removed["id"])
    assert info["status"] == "removed" and info["removal_reason"] == removed["removal_reason"]
    assert main(["curate", "--explain", removed["id"], "--out", str(out)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"{removed['id']}: removed at step 'heuristics': {removed['removal_reason']}")
    assert main(["curate", "--explain", "no-such-id", "--out", str(out)]) == 1
    assert main(["curate", str(tinyweb_small), "--out", str(out)]) == 0  # a finished run is not redone
    assert "already complete" in capsys.readouterr().err


def test_cli_tinyweb_then_curate(tmp_path, capsys):
    assert main(["tinyweb", "--docs", "300", "--out", str(tmp_path / "tw")]) == 0
    cfg = tmp_path / "c.yaml"
    cfg.write_text("quality: {enabled: false}\nexecutor: {workers: 1}\n")
    assert main(["curate", str(tmp_path / "tw"), "--out", str(tmp_path / "cur"), "--config", str(cfg),
                 "--quiet"]) == 0
    assert "300 in," in capsys.readouterr().out
    # the shared --set parser; the flags are its shorthands
    assert main(["curate", str(tmp_path / "tw"), "--out", str(tmp_path / "c3"), "--set", "quality.enabled=false",
                 "--set", "dedup.threshold=0.8", "--workers", "1", "--profile", "documents", "--quiet"]) == 0
    assert "(profile documents)" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "c3" / "manifest.json").read_text())
    assert manifest["config"]["dedup"]["threshold"] == 0.8 and manifest["config"]["executor"]["workers"] == 1
    assert main(["curate", str(tmp_path / "tw"), "--out", str(tmp_path / "c4"), "--set", "profile=books"]) == 2
    assert "profile: must be one of ['web', 'documents'], got 'books'" in capsys.readouterr().err
    assert main(["curate", str(tmp_path / "tw"), "--out", str(tmp_path / "c2"), "--config",
                 str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
