"""Issue 23 item 4: the MTP head stays fresh after customization.

A tiny model with an MTP head learns text A (each word followed by its successor in a fixed cycle of words), so
its head drafts well. Then it is customized on text B (another cycle over the same words): fine-tuned without the
head (`model.mtp.refresh=false`, what vLLM/peft/TRL do) the head keeps drafting A's words and the acceptance
length falls; with the refresh (the MTP loss in continued pre-training, the head-only distillation after LoRA)
it comes back. Acceptance is measured as serving sees it: greedy speculative decoding on held-out B prompts.
"""

import json
import random

import pytest

from hytron.config import from_dict
from hytron.data.mix import single_component_blend
from hytron.packing import iter_texts, pack
from hytron.tokenizer import Tokenizer
from hytron.train.pretrain import pretrain
from tests.train.conftest import tiny_recipe

WORDS = ["amber", "basil", "cedar", "delta", "ember", "fjord", "grove", "heron", "iris", "jade", "kelp", "lumen",
         "maple", "nectar", "onyx", "pearl", "quartz", "raven", "sage", "thyme", "umber", "violet", "willow",
         "xenon", "yarrow", "zephyr", "acorn", "birch", "coral", "dune"]


def _cycle_docs(seed: int, n_docs: int = 240, length: int = 48) -> list[dict]:
    """Documents walking one random cycle over WORDS (the cycle is the text's whole structure)."""
    rng = random.Random(seed)
    order = WORDS[:]
    rng.shuffle(order)
    succ = {w: order[(i + 1) % len(order)] for i, w in enumerate(order)}
    docs = []
    for i in range(n_docs):
        w, walk = rng.choice(WORDS), []
        for _ in range(length):
            walk.append(w)
            w = succ[w]
        docs.append({"id": f"s{seed}-{i}", "text": " ".join(walk) + ".", "source": "cycle", "quality_bucket": 4})
    return docs


@pytest.fixture(scope="module")
def cycles(tmp_path_factory):
    """(packed A, packed B, a hytron-tiny model with an MTP head trained on A): one tokenizer for both texts."""
    root = tmp_path_factory.mktemp("cycles")
    for name, seed in (("a", 1), ("b", 2)):
        (root / name).mkdir()
        (root / name / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in _cycle_docs(seed)))
    tok = Tokenizer.train(iter_texts([root / "a", root / "b"]), vocab_size=512)
    for name in ("a", "b"):
        pack(single_component_blend([str(root / name)], validation_fraction=0.1), tok, root / f"packed-{name}")
    summary = pretrain(tiny_recipe(root / "packed-a", root / "base", steps=80, eval_every=0, checkpoint_every=0,
                                   model={"preset": "hytron-tiny", "mtp": {"depths": 2}}), progress=False)
    return root / "packed-a", root / "packed-b", summary["model_dir"]


def _continue_on_b(cycles, out, refresh: bool) -> dict:
    """Continued pre-training (customize's full-weight stage) of the A model on B; its mtp_acceptance."""
    _, packed_b, base = cycles
    cfg = tiny_recipe(packed_b, out, steps=40, eval_every=0, checkpoint_every=0,
                      model={"init_from": base, "mtp": {"refresh": refresh}})
    summary = pretrain(cfg, progress=False)
    return summary["mtp_acceptance"]


def test_continued_pretraining_keeps_the_head_fresh_and_skipping_it_drops_acceptance(cycles, tmp_path):
    stale = _continue_on_b(cycles, tmp_path / "skip", refresh=False)
    fresh = _continue_on_b(cycles, tmp_path / "refresh", refresh=True)
    print("skip", stale, "\nrefresh", fresh)
    # before: the A model with its own head drafts for itself (the prompts are B's, the model still says A)
    assert stale["before"] == fresh["before"] and stale["before"]["mean_accepted_length"] > 3.0
    assert stale["after"]["mean_accepted_length"] < stale["before"]["mean_accepted_length"] - 1.0
    assert fresh["after"]["mean_accepted_length"] > stale["after"]["mean_accepted_length"] + 1.0
    assert fresh["after"]["acceptance_rate"] > 0.7


def test_lora_distils_the_head_from_the_adapted_model(cycles, tmp_path):
    from hytron.pipelines.jobs import lora_job
    from hytron.tune.recipe import LoRARecipe
    from tests.tune.conftest import tune_optim

    _, packed_b, base = cycles
    cfg = from_dict(LoRARecipe, {"out_dir": str(tmp_path), "steps": 60, "threads": 1, "eval_batches": 2,
                                 "data": {"path": str(packed_b), "seq_len": 64, "batch_size": 4},
                                 "optim": tune_optim(lr=1e-2, warmup_steps=4).__dict__,
                                 "model": {"init_from": str(base), "mtp": {"refresh_steps": 30}},
                                 "lora": {"r": 8, "alpha": 16}, "merge": True})
    result = lora_job(cfg, progress=False)
    acc = result["mtp_acceptance"]
    print(acc, result["mtp_refresh"])
    assert result["after"]["val_loss"] < result["before"]["val_loss"] - 1.0  # the adapters learned B
    assert acc["without_refresh"]["mean_accepted_length"] < acc["before"]["mean_accepted_length"] - 1.0
    assert acc["after"]["mean_accepted_length"] > acc["without_refresh"]["mean_accepted_length"] + 1.0
    assert result["mtp_refresh"]["kl_last"] < result["mtp_refresh"]["kl_first"]
    # the refreshed head travels in the merged model and beside the adapter (hytron merge applies it): both draft
    # as well as the model did in memory
    from hytron.model import HybridLM
    from hytron.pipelines.jobs import merge_job
    from hytron.train import mtp as mtp_head
    from hytron.tune.finetune import packed_eval_batches

    assert (tmp_path / "adapter" / "mtp_head.safetensors").is_file()
    prompts = mtp_head.heldout_prompts(packed_eval_batches(packed_b, 64, 4, 2))
    for model_dir in (result["model_dir"], merge_job(base, tmp_path / "adapter", tmp_path / "from-adapter")):
        merged = HybridLM.from_pretrained(model_dir).eval()
        assert mtp_head.acceptance(merged, prompts)["mean_accepted_length"] == pytest.approx(
            acc["after"]["mean_accepted_length"], abs=0.3), model_dir


def test_distillation_refreshes_the_students_head(cycles, tmp_path):
    """`hytron distill`: a student with a head (the A model) learns B from a teacher that knows B; its logit
    distillation never trains the head, so the head is distilled from the trained student afterwards."""
    from hytron.model import HybridLM
    from hytron.pipelines.jobs import distill_job
    from hytron.train import mtp as mtp_head
    from hytron.tune.finetune import packed_eval_batches
    from hytron.tune.recipe import DistillRecipe
    from tests.tune.conftest import tune_optim

    _, packed_b, base = cycles
    teacher = pretrain(tiny_recipe(packed_b, tmp_path / "teacher", steps=80, eval_every=0, checkpoint_every=0,
                                   model={"preset": "hytron-tiny"}), progress=False)["model_dir"]
    cfg = from_dict(DistillRecipe, {"out_dir": str(tmp_path / "student"), "steps": 60, "threads": 1,
                                    "eval_batches": 2, "teacher": str(teacher),
                                    "data": {"path": str(packed_b), "seq_len": 64, "batch_size": 4},
                                    "optim": tune_optim(lr=3e-3, warmup_steps=4).__dict__,
                                    "model": {"init_from": str(base), "mtp": {"refresh_steps": 30}}})
    result = distill_job(cfg, progress=False)
    acc = result["mtp_acceptance"]
    print(acc, result["mtp_refresh"])
    assert result["after"]["kl_to_teacher"] < result["before"]["kl_to_teacher"]  # the student learned B
    assert acc["without_refresh"]["mean_accepted_length"] < acc["before"]["mean_accepted_length"] - 1.0
    assert acc["after"]["mean_accepted_length"] > acc["without_refresh"]["mean_accepted_length"] + 1.0
    # the written student carries the refreshed head
    prompts = mtp_head.heldout_prompts(packed_eval_batches(packed_b, 64, 4, 2))
    student = HybridLM.from_pretrained(result["model_dir"]).eval()
    assert mtp_head.acceptance(student, prompts)["mean_accepted_length"] == pytest.approx(
        acc["after"]["mean_accepted_length"], abs=0.3)


def test_pruning_keeps_the_head_and_distils_it_from_the_recovered_model(cycles, tmp_path):
    """`hytron prune` of a model with a head (refused before): the head is pruned with it (sliced by weight
    magnitude) and, after the recovery run, distilled from the recovered model; it drafts as well as before."""
    from hytron.model import HybridLM
    from hytron.pipelines.jobs import prune_job
    from hytron.tune.recipe import PruneRecipe
    from tests.tune.conftest import tune_optim

    packed_a, _, base = cycles
    n = HybridLM.from_pretrained(base).num_params()
    cfg = from_dict(PruneRecipe, {"out_dir": str(tmp_path), "steps": 40, "threads": 1, "eval_batches": 2,
                                  "target_params": int(0.8 * n), "calib_batches": 2, "candidates": 2,
                                  "data": {"path": str(packed_a), "seq_len": 64, "batch_size": 4},
                                  "optim": tune_optim(lr=3e-3, warmup_steps=4).__dict__,
                                  "model": {"init_from": str(base), "mtp": {"refresh_steps": 30}}})
    report = prune_job(cfg, progress=False)
    acc = report["mtp_acceptance"]
    print(report["plan"], acc, report["mtp_refresh"])
    assert report["params_after"] < 0.85 * n
    # this head's task is easy (a fixed successor per word): the magnitude-sliced head already drafts as before
    assert acc["before"]["mean_accepted_length"] > 3.0
    for stage in ("without_refresh", "after"):
        assert acc[stage]["mean_accepted_length"] > acc["before"]["mean_accepted_length"] - 0.5
    assert report["mtp_refresh"]["steps"] == 30
    assert HybridLM.from_pretrained(tmp_path / "model").mtp is not None
