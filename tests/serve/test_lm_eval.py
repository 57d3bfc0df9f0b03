"""lm-evaluation-harness's `local-completions` scores a local JSONL multiple-choice task against the server.

The documented command (offline; the server's /tokenizer_info + /tokenize make lm-eval use its tokenizer):

    hytron serve MODEL_DIR --port 8000 &
    HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 lm_eval --model local-completions \\
        --model_args model=MODEL_NAME,base_url=http://127.0.0.1:8000/v1/completions,num_concurrent=1,\\
max_retries=1,max_length=2048,tokenized_requests=True \\
        --tasks my_task --include_path DIR_WITH_TASK_YAML --output_path out --log_samples

Each log-likelihood lm-eval reports must equal the one computed directly from the model.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from tests.fixtures.lm_eval_tasks import PLAIN_DOCS as DOCS
from tests.fixtures.lm_eval_tasks import write_mc_task
from tests.serve.conftest import running_server

pytest.importorskip("lm_eval")
pytest.importorskip("tenacity")  # lm-eval[api]



@pytest.mark.slow
def test_lm_eval_local_completions_scores_a_local_task(model_dir, tmp_path):
    lm_eval = shutil.which("lm_eval") or os.path.join(os.path.dirname(sys.executable), "lm_eval")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    write_mc_task(tasks, "hytron_mc_local", DOCS)
    with running_server(model_dir, max_len=2048) as server:
        env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
               "HF_DATASETS_CACHE": str(tmp_path / "cache"), "HF_HOME": str(tmp_path / "hf")}
        args = ("model=tiny-chat,base_url=" + server.url + "/v1/completions,num_concurrent=1,max_retries=1,"
                "max_length=2048,tokenized_requests=True")
        out = subprocess.run([lm_eval, "--model", "local-completions", "--model_args", args,
                              "--tasks", "hytron_mc_local", "--include_path", str(tasks),
                              "--output_path", str(tmp_path / "out"), "--log_samples"],
                             capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert "Using remote tokenizer" in out.stderr + out.stdout
        backend = server.backend
        samples_file = next((tmp_path / "out").rglob("samples_hytron_mc_local_*.jsonl"))
        samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
        results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    assert len(samples) == len(DOCS)
    correct = 0
    for s in samples:
        context = f"Question: {s['doc']['question']}\nAnswer:"
        lls = []
        for choice, (ll, _greedy) in zip(s["doc"]["choices"], s["filtered_resps"]):
            whole = backend.encode(context + " " + choice)
            n_ctx = len(backend.encode(context))
            with torch.no_grad():
                lp = torch.log_softmax(backend.model(torch.tensor([whole]))[0].float(), -1)
            want = sum(float(lp[j - 1, whole[j]]) for j in range(n_ctx, len(whole)))
            assert float(ll) == pytest.approx(want, abs=1e-3)
            lls.append(want)
        correct += int(max(range(len(lls)), key=lls.__getitem__) == s["doc"]["label"])
    assert results["results"]["hytron_mc_local"]["acc,none"] == pytest.approx(correct / len(DOCS))
