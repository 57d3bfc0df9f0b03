"""Distillation: the top-k forward KL is a proper divergence, and training on it brings a student to its teacher."""

import torch
import torch.nn.functional as F

from hytron.train.batches import collate
from hytron.tune import TuneConfig, chat_batches, finetune, packed_batches, packed_eval_batches, teacher_topk, topk_kl
from hytron.tune.importance import estimate_importance
from hytron.tune.prune import prune_model, search_plan
from tests.conftest import tiny_model
from tests.tune.conftest import calib_batches, load
from tests.tune.conftest import tune_optim as _optim


def test_topk_kl_zero_only_at_the_teacher_and_matches_full_kl():
    t = torch.randn(3, 5, 50)
    v, i = teacher_topk(t, 50)
    assert topk_kl(t, v, i).abs().item() < 1e-6  # full vocabulary, same logits: zero
    s = t + 0.3 * torch.randn_like(t)  # with k = V it is the ordinary forward KL(teacher || student)
    full = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="none").sum(-1)
    assert torch.allclose(topk_kl(s, v, i, reduction="none"), full, atol=1e-5)
    # k < V: zero exactly when the student puts the teacher's top-k shape there and nothing elsewhere
    v, i = teacher_topk(t, 8)
    student = torch.full_like(t, -1e4).scatter(-1, i, v)
    assert topk_kl(student, v, i).item() < 1e-5
    assert topk_kl(t, v, i).item() > 0.01  # the teacher itself leaks mass outside its top-8: penalised
    other = torch.randn_like(t)
    kl = topk_kl(other, v, i, temperature=2.0, reduction="none")
    assert kl.shape == (3, 5) and bool((kl > 0).all())
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[0, :2] = True
    assert torch.allclose(topk_kl(other, v, i, 2.0, mask), kl[0, :2].mean())


def test_distilling_a_pruned_student_lowers_its_kl_to_the_teacher(trained_tiny, packed_data, tmp_path):
    teacher = load(trained_tiny)
    calib = calib_batches(packed_data, n=2)
    imp = estimate_importance(teacher, calib)
    plan, _ = search_plan(teacher, imp, int(0.7 * teacher.num_params()), calib, max_candidates=4)
    student = prune_model(teacher, imp, plan)
    cfg = TuneConfig(out_dir=str(tmp_path), steps=20, optim=_optim(lr=2e-3, warmup_steps=2))
    result = finetune(student, packed_batches(packed_data, 64, 4, seed=1), cfg, teacher=teacher,
                      eval_batches=packed_eval_batches(packed_data, 64, 4, 4), progress=False)
    before, after = result["before"]["kl_to_teacher"], result["after"]["kl_to_teacher"]
    assert after < 0.8 * before, (before, after)


def test_distillation_on_chat_rows_trains_only_assistant_tokens(trained_tiny, packed_corpus, tmp_path):
    _, tok = packed_corpus
    teacher = load(trained_tiny)
    rows = [[{"role": "user", "content": f"What is {a} plus {b}?"},
             {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}] for a in range(1, 9) for b in (2, 5)]
    examples = [tok.render_chat(m) for m in rows]
    x, y, m = collate(examples[:2], pad_id=0)
    assert 0 < int(m.sum()) < m.numel()  # user turns and headers are not trained on
    torch.manual_seed(3)
    student = tiny_model(vocab_size=teacher.config.vocab_size)  # a fresh student, the teacher's vocabulary
    evals = [collate(examples[i:i + 4], 0) for i in range(0, 8, 4)]
    cfg = TuneConfig(out_dir=str(tmp_path), steps=15, optim=_optim(lr=3e-3, warmup_steps=2), kd_topk=16,
                     kd_temperature=2.0, kd_alpha=0.5)
    result = finetune(student, chat_batches(examples, 4, pad_id=0), cfg, teacher=teacher, eval_batches=evals,
                      progress=False)
    assert result["after"]["kl_to_teacher"] < 0.8 * result["before"]["kl_to_teacher"]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert any('"kd"' in line and '"ce"' in line for line in lines)
