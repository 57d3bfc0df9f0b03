"""SFT and GRPO runs: loss falls, exact resume, reward shaping and the Dr.GRPO objective."""

import json

import pytest
import torch

from hytron.config import ConfigError, from_dict, load_recipe
from hytron.data.io import write_jsonl
from hytron.reasoning.generation import Solver
from hytron.reasoning.prompts import problem_prompts
from hytron.train.metrics import read_metrics
from hytron.train.recipe import SFTConfig
from hytron.train.rl import RLConfig, dr_grpo_advantages, group_rewards, grpo, token_logprobs
from hytron.train.sft import sft
from tests.conftest import losses


def _load(model_dir):
    from hytron.model import HybridLM
    from hytron.tokenizer import Tokenizer

    return HybridLM.from_pretrained(model_dir), Tokenizer.load(model_dir)


def sft_config(data, tok_dir, out, **changes):
    cfg = {"name": "t", "out_dir": str(out), "steps": 6, "seed": 0, "log_every": 1, "eval_every": 3,
           "checkpoint_every": 3, "tokenizer": str(tok_dir), "model": {"preset": "hytron-tiny"},
           "data": {"path": str(data), "seq_len": 320, "batch_size": 4, "val_rows": 8},
           "optim": {"lr": 3e-3, "warmup_steps": 1}}
    cfg.update(changes)
    return from_dict(SFTConfig, cfg)


@pytest.fixture(scope="module")
def sft_run(rows, tok_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    data = write_jsonl(rows, root / "rows.jsonl")
    whole = sft(sft_config(data, tok_dir, root / "whole"), progress=False)
    return root, data, whole


def test_sft_learns_and_exports_a_loadable_chat_model(sft_run):
    root, _, whole = sft_run
    losses = [r["loss"] for r in read_metrics(root / "whole" / "metrics.jsonl") if "loss" in r]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.5
    from hytron.reasoning.generation import load_solver

    solver = load_solver(whole["model_dir"])
    assert solver.tokenizer.vocab_size == solver.model.config.vocab_size


def test_sft_resume_is_exact(sft_run, tok_dir):
    root, data, whole = sft_run
    cfg = sft_config(data, tok_dir, root / "split")
    first = sft(cfg, progress=False, max_steps_this_run=3)
    assert first["status"] == "paused"
    sft(cfg, progress=False)
    a = [r["loss"] for r in read_metrics(root / "whole" / "metrics.jsonl") if "loss" in r]
    b = [r["loss"] for r in read_metrics(root / "split" / "metrics.jsonl") if "loss" in r]
    assert a == b


def test_sft_recipe_loads_and_errors_name_the_field(tmp_path):
    cfg = load_recipe(SFTConfig, "sft-tiny", ["data.batch_size=2", "tokenizer=/x"])
    assert cfg.data.batch_size == 2 and cfg.tokenizer == "/x"
    with pytest.raises(ConfigError, match="data.seq_len"):
        load_recipe(SFTConfig, "sft-tiny", ["data.seq_len=0"])
    with pytest.raises(ConfigError, match="rl.group_size"):
        load_recipe(RLConfig, "rl-tiny", ["rl.group_size=1"])
    for ignored in ("precision=fp8", "compile=true", "eval_every=5", "data.path=x"):  # settings GRPO cannot honour
        with pytest.raises(ConfigError, match="unknown field"):
            load_recipe(RLConfig, "rl-tiny", [ignored])


def test_length_penalty_only_separates_correct_answers():
    correct = [True, True, True, False, False]
    lengths = [10, 20, 40, 5, 100]
    r = group_rewards(correct, lengths, 0.5)
    assert r[3] == r[4] == 0.0  # wrong: 0 whatever the length
    assert r[0] > r[1] > r[2] > 0.5 - 1e-9 and max(r) <= 1.0  # correct: shorter is better, never below 1 - alpha
    assert group_rewards(correct, lengths, 0.0)[:3] == [1.0, 1.0, 1.0]
    adv = dr_grpo_advantages(r)
    assert abs(sum(adv)) < 1e-12
    assert adv == pytest.approx([x - sum(r) / 5 for x in r])  # no division by the group's std
    assert dr_grpo_advantages([2 * x for x in r]) == pytest.approx([2 * a for a in adv])


def test_policy_gradient_step_raises_the_logprob_of_a_positively_advantaged_completion(tok):
    from tests.conftest import tiny_model

    model = tiny_model(vocab_size=tok.vocab_size).train()
    seqs = [[1, 3, 20, 21, 22, 23], [1, 3, 20, 30, 31]]
    starts = [3, 3]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    before, mask = token_logprobs(model, seqs, starts, 1.0, tok.pad_id)
    assert mask.sum() == 3 + 2
    adv = torch.tensor([[1.0], [-1.0]])
    (-(before * adv * mask).sum() / 10).backward()
    opt.step()
    with torch.no_grad():
        after, _ = token_logprobs(model, seqs, starts, 1.0, tok.pad_id)
    gain = ((after - before.detach()) * mask).sum(-1)
    assert gain[0] > 0 > gain[1]


@pytest.mark.slow
def test_grpo_runs_resumes_and_exports(sft_run, tok_dir, tmp_path):
    _, _, whole = sft_run
    cfg = from_dict(RLConfig, {"name": "rl", "out_dir": str(tmp_path / "rl"), "steps": 2, "log_every": 1,
                               "checkpoint_every": 1, "model": {"init_from": whole["model_dir"]},
                               "optim": {"lr": 1e-4, "warmup_steps": 0, "schedule": "constant"},
                               "rl": {"prompts_per_step": 2, "group_size": 2, "max_tokens": 24}})
    assert grpo(cfg, problem_prompts(cfg), progress=False, max_steps_this_run=1)["status"] == "paused"
    summary = grpo(cfg, problem_prompts(cfg), progress=False)
    assert summary["status"] == "finished"
    recs = read_metrics(tmp_path / "rl" / "metrics.jsonl")
    assert [r["step"] for r in recs] == [1, 2]
    assert all(0 <= r["accuracy"] <= 1 and r["thinking_tokens"] <= 24 for r in recs)
    assert Solver(*_load(summary["model_dir"])).tokenizer.vocab_size == json.loads(
        (tmp_path / "rl" / "model" / "config.json").read_text())["vocab_size"]
    with pytest.raises(ConfigError, match="model.init_from"):
        cfg = from_dict(RLConfig, {"out_dir": str(tmp_path / "x")})
        grpo(cfg, problem_prompts(cfg), progress=False)


_SFT_SCRIPT = """import sys
from hytron.config import load_recipe
from hytron.train.recipe import SFTConfig
from hytron.train.sft import sft
print(sft(load_recipe(SFTConfig, sys.argv[1]), progress=False, max_steps_this_run=int(sys.argv[2]) or None))
"""


def _torchrun_sft(tmp_path, recipe, max_steps=0):
    import os
    import subprocess
    import sys

    script = tmp_path / "run_sft.py"
    script.write_text(_SFT_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(recipe), str(max_steps)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.slow
def test_two_process_fsdp_sft_evaluates_on_every_rank_and_resumes_exactly(rows, tok_dir, tok, tmp_path):
    """Under FSDP2 the forward is collective: evaluation runs on both ranks (rank 0 alone would hang) and covers
    the held-out rows once; a run paused and resumed under torchrun equals the one run straight through."""
    import yaml

    from hytron.data.chat import read_chat_jsonl
    from hytron.model import HybridLM
    from hytron.train.batches import encode_rows, evaluate_masked
    from hytron.train.distributed import DistInfo

    data = write_jsonl(rows, tmp_path / "rows.jsonl")
    recipes = {}
    for name in ("whole", "split"):
        cfg = sft_config(data, tok_dir, tmp_path / name, steps=4, eval_every=2, checkpoint_every=0,
                         distributed="fsdp")
        cfg.data.batch_size = 2  # per rank: the global batch stays 4
        recipes[name] = tmp_path / f"{name}.yaml"
        recipes[name].write_text(yaml.safe_dump(cfg.to_dict()))
    _torchrun_sft(tmp_path, recipes["whole"])
    _torchrun_sft(tmp_path, recipes["split"], max_steps=2)
    assert json.loads((tmp_path / "split" / "summary.json").read_text())["status"] == "paused"
    _torchrun_sft(tmp_path, recipes["split"])
    whole, split = (read_metrics(tmp_path / n / "metrics.jsonl") for n in ("whole", "split"))
    strip = lambda recs: [{k: v for k, v in r.items() if k not in ("time", "step_s")} for r in recs]  # noqa: E731
    assert strip(whole) == strip(split)
    evals = [r for r in whole if "val_loss" in r]
    assert [r["step"] for r in evals] == [2, 4]
    # the two ranks' evaluation equals one process scoring every held-out row of the exported model
    chat = read_chat_jsonl(data)
    order = torch.randperm(len(chat), generator=torch.Generator().manual_seed(0)).tolist()
    val, _ = encode_rows(tok, [chat[i] for i in order[:8]], 320)
    model = HybridLM.from_pretrained(tmp_path / "whole" / "model")
    one = evaluate_masked(model, val, 2, tok.pad_id, DistInfo())
    assert one["val_tokens"] == evals[-1]["val_tokens"]
    assert abs(one["val_loss"] - evals[-1]["val_loss"]) < 1e-5


@pytest.mark.slow
def test_sft_stopped_by_sigterm_resumes_bit_for_bit(sft_run, tok_dir, tmp_path, sigterm_at):
    root, data, _ = sft_run
    cfg = sft_config(data, tok_dir, tmp_path / "run", checkpoint_every=0)
    sigterm_at(2)
    assert sft(cfg, progress=False)["message"].startswith("interrupted by signal 15; checkpoint saved at step 2")
    sigterm_at(None)
    assert sft(cfg, progress=False)["status"] == "finished"
    assert losses(tmp_path / "run") == losses(root / "whole")


@pytest.mark.slow
def test_grpo_stopped_by_sigterm_resumes_bit_for_bit(sft_run, tmp_path, sigterm_at):
    _, _, whole = sft_run

    def run(name):
        cfg = from_dict(RLConfig, {"name": "rl", "out_dir": str(tmp_path / name), "steps": 3, "log_every": 1,
                                   "checkpoint_every": 0, "model": {"init_from": whole["model_dir"]},
                                   "optim": {"lr": 1e-3, "warmup_steps": 0, "schedule": "constant"},
                                   "rl": {"prompts_per_step": 2, "group_size": 3, "max_tokens": 16}})
        return grpo(cfg, problem_prompts(cfg), progress=False)

    run("straight")
    sigterm_at(1)
    assert run("stopped")["status"] == "interrupted"
    sigterm_at(None)
    run("stopped")
    recs = [read_metrics(tmp_path / n / "metrics.jsonl") for n in ("straight", "stopped")]
    keep = ("step", "reward", "accuracy", "thinking_tokens", "loss", "grad_norm")
    assert [{k: r.get(k) for k in keep} for r in recs[0]] == [{k: r.get(k) for k in keep} for r in recs[1]]
    assert len(recs[0]) == 3


def test_sft_trains_a_models_mtp_head_and_reports_its_acceptance(sft_run, tok_dir, tmp_path):
    """SFT adds/keeps an MTP head: per-depth losses over assistant targets are logged, the acceptance length is
    reported before and after; `model.mtp.refresh=false` leaves an existing head out of the loss."""
    _, data, _ = sft_run
    first = sft(sft_config(data, tok_dir, tmp_path / "add", model={"preset": "hytron-tiny", "mtp": {"depths": 2}}),
                progress=False)
    recs = [r for r in read_metrics(tmp_path / "add" / "metrics.jsonl") if "loss" in r]
    assert recs[-1]["mtp_loss_1"] < recs[0]["mtp_loss_1"] - 0.5 and "mtp_loss_2" in recs[0]
    acc = first["mtp_acceptance"]
    assert acc["before"]["k"] == 3 and acc["after"]["mean_accepted_length"] >= 1.0
    for refresh in (True, False):
        out = tmp_path / f"refresh-{refresh}"
        summary = sft(sft_config(data, tok_dir, out, steps=2, model={"init_from": first["model_dir"],
                                                                     "mtp": {"refresh": refresh}}), progress=False)
        rec = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r][-1]
        assert ("mtp_loss_2" in rec) is refresh and "mtp_acceptance" in summary
