"""The customization verbs' recipes: shipped examples load, mistakes name the field at load time, and a section
given in part keeps the defaults its recipe chose for the rest."""

import pytest
import yaml

from hytron.config import ConfigError, load_recipe
from hytron.train.recipe import DataSpec, ModelSpec, TrainConfig
from hytron.tune.recipe import CustomizeConfig, DistillRecipe, LoRARecipe, PruneRecipe, TuneConfig, as_recipe


@pytest.mark.parametrize(("cls", "name"), [(LoRARecipe, "lora"), (DistillRecipe, "distill"), (PruneRecipe, "prune")])
def test_shipped_recipes_load_as_training_runs(cls, name):
    cfg = load_recipe(cls, name)
    assert isinstance(cfg, TrainConfig) and cfg.name == name and cfg.model.init_from and cfg.data.path
    assert cfg.precision == "auto" and cfg.optim.schedule == "cosine"


def test_recipe_mistakes_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="model.init_from"):
        load_recipe(LoRARecipe, "lora", ["model.init_from="])
    with pytest.raises(ConfigError, match="teacher"):
        load_recipe(DistillRecipe, "distill", ["teacher="])
    with pytest.raises(ConfigError, match="target_params"):
        load_recipe(PruneRecipe, "prune", ["target_params=0"])
    with pytest.raises(ConfigError, match="lora.targets: unknown module name"):
        load_recipe(LoRARecipe, "lora", ["lora.targets=[q_proj, nope]"])
    with pytest.raises(ConfigError, match="precision: tuning runs in"):  # a pre-training recipe is not a tuning one
        load_recipe(LoRARecipe, "lora", ["precision=nvfp4"])
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['r'\]"):  # the old flag is a field of lora:
        load_recipe(LoRARecipe, "lora", ["r=4"])


def test_a_section_given_in_part_keeps_the_recipes_defaults(tmp_path):
    # customize's train section defaults to lr 5e-4, cosine, no weight decay; giving only optim.lr keeps the rest
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"base_model": "m", "data": {"inputs": ["d"], "replay_share": 0},
                                    "train": {"steps": 7, "optim": {"lr": 1e-3}}}))
    t = load_recipe(CustomizeConfig, path).train
    assert (t.steps, t.optim.lr, t.optim.schedule, t.optim.weight_decay, t.data.seq_len) == (7, 1e-3, "cosine", 0, 256)
    # a tuning run's optimizer defaults (cosine, no decay) are not pre-training's (wsd, 0.1)
    assert load_recipe(LoRARecipe, "lora", ["optim={lr: 1.0e-3}"]).optim.weight_decay == 0.0


def test_as_recipe_carries_the_run_shape():
    run = TuneConfig(steps=9, precision="bf16", distributed="ddp")
    lora = as_recipe(LoRARecipe, run, model=ModelSpec(init_from="m"), data=DataSpec(path="d"), merge=True)
    assert (lora.steps, lora.precision, lora.distributed, lora.merge) == (9, "bf16", "ddp", True)
