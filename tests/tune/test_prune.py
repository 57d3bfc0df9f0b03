"""Minitron pruning: exact slicing, importance that matters, a valid smaller Nemotron-H model near the target."""

import pytest
import torch

from hytron.model import HybridLM
from hytron.tune.importance import calibration_loss, estimate_importance
from hytron.tune.prune import PrunePlan, candidate_plans, prune_model, search_plan
from tests.conftest import tiny_model
from tests.tune.conftest import calib_batches, load


def test_keep_everything_plan_is_exact():
    model = tiny_model()
    x = torch.randint(0, 512, (2, 40))
    imp = estimate_importance(model, [(x, x)], depth=False)
    same = prune_model(model, imp, PrunePlan())
    with torch.no_grad():
        assert torch.equal(same(x), model(x))


def test_pruning_mlp_neurons_that_do_nothing_is_exact():
    model = tiny_model()
    dead = torch.arange(0, 384, 3)  # every third neuron of every MLP writes nothing to the residual stream
    with torch.no_grad():
        for blk in model.backbone.layers:
            if blk.kind == "-":
                blk.mixer.down_proj.weight[:, dead] = 0
    x = torch.randint(0, 512, (2, 40))
    imp = estimate_importance(model, [(x, x)], depth=False)
    for i in imp.mlp:  # importance is activation-based; make the dead neurons rank last
        imp.mlp[i][dead] = -1
    pruned = prune_model(model, imp, PrunePlan(intermediate_size=384 - len(dead)))
    assert pruned.config.intermediate_size == 256
    with torch.no_grad():
        assert (pruned(x) - model(x)).abs().max().item() < 1e-5


def test_importance_beats_reversed_importance(trained_tiny, packed_data):
    model = load(trained_tiny)
    calib = calib_batches(packed_data)
    imp = estimate_importance(model, calib)
    assert imp.layers.shape == (7,) and bool((imp.layers > 0).any())
    plan = PrunePlan(hidden_size=80, intermediate_size=192, mamba_num_heads=4)
    good = calibration_loss(prune_model(model, imp, plan), calib)
    rev = estimate_importance(model, calib, depth=False)
    rev.hidden, rev.mlp = -rev.hidden, {i: -s for i, s in rev.mlp.items()}
    rev.mamba_heads = {i: -s for i, s in rev.mamba_heads.items()}
    bad = calibration_loss(prune_model(model, rev, plan), calib)
    assert good < bad - 0.1, (good, bad)


def test_pruned_to_target_loads_in_transformers(trained_tiny, packed_data, tmp_path):
    transformers = pytest.importorskip("transformers")
    model = load(trained_tiny)
    calib = calib_batches(packed_data, n=2)
    imp = estimate_importance(model, calib)
    target = int(0.7 * model.num_params())
    plan, table = search_plan(model, imp, target, calib, max_candidates=6)
    assert 1 <= len(table) <= 6
    pruned = prune_model(model, imp, plan)
    assert abs(pruned.num_params() - target) <= 0.02 * target
    assert pruned.num_params() == pruned.config.num_params()
    pruned.save_pretrained(tmp_path / "pruned")
    again = HybridLM.from_pretrained(tmp_path / "pruned")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "pruned", dtype=torch.float32,
                                                           attn_implementation="eager").eval()
    x = calib[0][0]
    with torch.no_grad():
        ours = again(x)
        theirs = hf(x, use_cache=False).logits
    assert torch.isfinite(ours).all()
    assert (ours - theirs).abs().max().item() < 1e-4


def test_group_aware_heads_and_bad_plans():
    model = tiny_model()
    x = torch.randint(0, 512, (1, 20))
    imp = estimate_importance(model, [(x, x)], depth=False)
    with pytest.raises(ValueError, match="multiple of n_groups"):
        prune_model(model, imp, PrunePlan(mamba_num_heads=5))
    with pytest.raises(ValueError, match="hidden_size"):
        PrunePlan(hidden_size=999).config(model.config)
    with pytest.raises(ValueError, match="no pruning plan"):
        search_plan(model, imp, 10, [(x, x)])
    # each group of H/G = 4 heads keeps its own best 3
    imp.mamba_heads = {i: torch.tensor([9.0, 1, 8, 7, 1, 9, 8, 7]) for i in imp.mamba_heads}
    pruned = prune_model(model, imp, PrunePlan(mamba_num_heads=6))
    a_old, a_new = model.backbone.layers[0].mixer.A_log, pruned.backbone.layers[0].mixer.A_log
    assert torch.equal(a_new, a_old[[0, 2, 3, 5, 6, 7]])
    assert candidate_plans(model.config, imp, model.num_params() // 5) == []  # beyond half of every width


@pytest.mark.parametrize("latent", [None, 16])
def test_moe_model_prunes_hidden_and_depth(tmp_path, latent):
    model = tiny_model("hytron-tiny-moe", moe_latent_size=latent)  # LatentMoE: experts keep the latent width
    x = torch.randint(0, 512, (2, 24))
    imp = estimate_importance(model, [(x, x)])
    with torch.no_grad():
        assert torch.equal(prune_model(model, imp, PrunePlan())(x), model(x))
    pruned = prune_model(model, imp, PrunePlan(drop_layers=(1,), hidden_size=48, mamba_num_heads=6))
    assert pruned.config.pattern == "MM*EM" and pruned.config.hidden_size == 48
    pruned.save_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.isfinite(HybridLM.from_pretrained(tmp_path)(x)).all()


def _mtp_logits(model, x):
    with torch.no_grad():
        return model.mtp_logits(x, model(x, return_hidden=True), 2)


@pytest.mark.parametrize("head", ["M-", "*E"])
def test_an_mtp_head_is_pruned_with_the_model(tmp_path, head):
    """The head's hidden channels follow the model's; units inside its blocks go by weight magnitude (a neuron
    that writes nothing ranks last, so pruning exactly those leaves the drafts unchanged); the result saves and
    loads with every mtp.* tensor."""
    model = tiny_model("hytron-tiny-moe" if "E" in head else "hytron-tiny", num_nextn_predict_layers=1,
                       mtp_pattern=head)
    x = torch.randint(0, 512, (2, 24))
    imp = estimate_importance(model, [(x, x)], depth=False)
    same = prune_model(model, imp, PrunePlan())
    for a, b in zip(_mtp_logits(same, x), _mtp_logits(model, x)):
        assert torch.equal(a, b)
    if head == "M-":
        mlp = model.mtp.layers[1].mixer
        dead = torch.arange(0, mlp.down_proj.weight.size(1), 3)
        with torch.no_grad():
            mlp.down_proj.weight[:, dead] = 0
            for blk in model.backbone.layers:  # and in the model's MLPs, ranked last by calibration
                if blk.kind == "-":
                    blk.mixer.down_proj.weight[:, dead] = 0
        for i in imp.mlp:
            imp.mlp[i][dead] = -1
        width = mlp.down_proj.weight.size(1) - len(dead)
        narrow = prune_model(model, imp, PrunePlan(intermediate_size=width))
        for a, b in zip(_mtp_logits(narrow, x), _mtp_logits(model, x)):
            assert (a - b).abs().max().item() < 1e-5
    small = prune_model(model, imp, PrunePlan(hidden_size=48, mamba_num_heads=4 if head == "M-" else None))
    assert small.mtp.layers[0].eh_proj.weight.shape == (48, 96)
    small.save_pretrained(tmp_path)
    back = HybridLM.from_pretrained(tmp_path)
    assert sorted(k for k in back.state_dict() if k.startswith("mtp.")) == sorted(
        k for k in small.state_dict() if k.startswith("mtp."))
    assert all(torch.isfinite(t).all() for t in _mtp_logits(back, x))
