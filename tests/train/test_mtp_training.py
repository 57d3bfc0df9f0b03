"""Multi-token prediction in training: any recipe adds a head with `--set model.mtp=...`; its loss falls, is logged
per depth, leaves the next-token loss's start untouched, resumes exactly and travels with the exported model."""

import pytest
import torch

from hytron.config import ConfigError, load_recipe
from hytron.model import HybridLM
from hytron.train.loop import next_token_losses
from hytron.train.metrics import read_metrics
from hytron.train.pretrain import pretrain
from hytron.train.recipe import TrainConfig
from tests.train.conftest import tiny_recipe


def _records(out_dir):
    return {r["step"]: r for r in read_metrics(out_dir / "metrics.jsonl") if "loss" in r}


@pytest.fixture(scope="module")
def mtp_run(packed_tinyweb, tmp_path_factory):
    out = tmp_path_factory.mktemp("mtp")
    cfg = tiny_recipe(packed_tinyweb, out, model={"preset": "hytron-tiny", "mtp": {"depths": 2}})
    return out, pretrain(cfg, progress=False)


def test_mtp_losses_fall_and_are_logged_per_depth(mtp_run):
    out, summary = mtp_run
    rec = _records(out)
    assert summary["status"] == "finished"
    for key in ("loss", "mtp_loss_1", "mtp_loss_2"):
        assert rec[12][key] < rec[1][key] - 0.5, key
    assert "mtp_loss_3" not in rec[12]
    # the head is added after the main model is initialised: step 1's next-token loss is the plain run's golden one
    assert rec[1]["loss"] == pytest.approx(5.9841, abs=2e-3)


def test_the_trained_head_is_exported_and_predicts_further_ahead(mtp_run, packed_tinyweb):
    out, _ = mtp_run
    model = HybridLM.from_pretrained(out / "model").eval()
    assert model.config.num_nextn_predict_layers == 1 and model.config.mtp_pattern == "*-"  # hytron-tiny: dense
    from hytron.packing import PackedData, iter_eval_batches

    x, y = next(iter_eval_batches(PackedData(packed_tinyweb), 64, 4, max_batches=1))
    with torch.no_grad():
        _, parts = next_token_losses(model(x, mtp_depths=2), y)
    assert parts["mtp_loss_1"] < 4.0  # the untrained head's start is ~6.2 (log 512)


def test_mtp_run_resumes_bit_for_bit(mtp_run, packed_tinyweb, tmp_path):
    cfg = tiny_recipe(packed_tinyweb, tmp_path, model={"preset": "hytron-tiny", "mtp": {"depths": 2}})
    assert pretrain(cfg, progress=False, max_steps_this_run=5)["message"].startswith("paused at step 5")
    pretrain(cfg, progress=False)
    assert _records(tmp_path) .keys() == _records(mtp_run[0]).keys()
    for step, rec in _records(mtp_run[0]).items():
        got = _records(tmp_path)[step]
        assert [got[k] for k in ("loss", "mtp_loss_1", "mtp_loss_2")] == [rec[k] for k in
                                                                          ("loss", "mtp_loss_1", "mtp_loss_2")]


def test_any_recipe_adds_a_head_with_set():
    cfg = load_recipe(TrainConfig, "tiny", ["model.mtp={depths: 2, loss_scale: 0.1}"])
    assert (cfg.model.mtp.depths, cfg.model.mtp.loss_scale, cfg.model.mtp.pattern) == (2, 0.1, "")
    assert load_recipe(TrainConfig, "tiny", ["model.mtp.depths=3"]).model.mtp.loss_scale == 0.3
    with pytest.raises(ConfigError, match="model.mtp.depths"):
        load_recipe(TrainConfig, "tiny", ["model.mtp.depths=-1"])


def test_mtp_loss_is_the_scaled_mean_over_depths():
    torch.manual_seed(0)
    logits, d1, d2 = torch.randn(2, 6, 10), torch.randn(2, 5, 10), torch.randn(2, 4, 10)
    y = torch.randint(0, 10, (2, 6))
    loss, parts = next_token_losses((logits, [d1, d2]), y, mtp_loss_scale=0.3)
    ce = torch.nn.functional.cross_entropy
    torch.testing.assert_close(parts["mtp_loss_2"], ce(d2.flatten(0, 1), y[:, 2:].flatten()))  # token t+3
    torch.testing.assert_close(loss, ce(logits.flatten(0, 1), y.flatten())
                               + 0.3 * (parts["mtp_loss_1"] + parts["mtp_loss_2"]) / 2)


def test_stages_without_an_mtp_loss_refuse_mtp_depths_instead_of_ignoring_them(packed_tinyweb, tmp_path):
    from hytron.train.setup import build_model

    cfg = tiny_recipe(packed_tinyweb, tmp_path, model={"preset": "hytron-tiny", "mtp": {"depths": 1}})
    with pytest.raises(ConfigError, match="does not train an MTP head yet"):
        build_model(cfg, 512)
    assert build_model(cfg, 512, trains_mtp=True).mtp is not None


def test_low_precision_recipes_leave_the_mtp_head_in_high_precision():
    from hytron.lowp import convert
    from hytron.lowp.convert import quant_linears
    from hytron.model import HybridConfig

    model = HybridLM(HybridConfig.from_name("hytron-tiny", num_nextn_predict_layers=1, mtp_pattern="*-"))
    convert(model, "nvfp4")
    names = [name for name, _ in quant_linears(model)]
    assert names and not any(name.startswith("mtp.") for name in names)


def test_masked_mtp_losses_count_only_trained_targets_at_each_depth():
    from hytron.model import HybridConfig
    from hytron.train.batches import masked_losses

    torch.manual_seed(0)
    model = HybridLM(HybridConfig.from_name("hytron-tiny", num_nextn_predict_layers=1, mtp_pattern="*-"))
    x, y = torch.randint(0, 512, (2, 10)), torch.randint(0, 512, (2, 10))
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, 4:], mask[1, 6:9] = True, True  # assistant targets; the rest is prompt or padding
    total, parts = masked_losses(model, x, y, mask, mtp_depths=2, mtp_loss_scale=0.5)
    logits, depths = model(x, mtp_depths=2)
    ce = torch.nn.functional.cross_entropy
    for k, d in enumerate([logits, *depths]):
        m = mask[:, k:]
        want = ce(d[m[:, :d.size(1)]], y[:, k:][m[:, :d.size(1)]], reduction="sum")
        torch.testing.assert_close(parts["loss" if k == 0 else f"mtp_loss_{k}"], want)
    torch.testing.assert_close(total, parts["loss"] + 0.5 * (parts["mtp_loss_1"] + parts["mtp_loss_2"]) / 2)
