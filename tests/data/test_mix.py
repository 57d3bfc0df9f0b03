"""Blend specs validate with errors that name the field, and route documents as documented."""

from pathlib import Path

import pytest

from hytron.config import ConfigError
from hytron.data.mix import Blend, single_component_blend

RECIPES = sorted((Path(__file__).resolve().parents[2] / "src" / "hytron" / "recipes").glob("blend*.yaml"))


def make(**overrides):
    data = {"inputs": ["curated"], "components": [{"name": "high", "weight": 3, "buckets": [3, 4]},
                                                  {"name": "rest", "weight": 1}]}
    data.update(overrides)
    return Blend.from_mapping(data)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_blend_recipe_loads(path):
    blend = Blend.load(path)
    assert abs(sum(blend.weights.values()) - 1) < 1e-12
    assert Blend.from_mapping(blend.to_dict()) == blend  # resolved form reloads to the same blend


def test_recipes_exist():
    assert any(p.name == "blend-quickstart.yaml" for p in RECIPES)


def test_weights_are_normalised():
    assert make().weights == {"high": 0.75, "rest": 0.25}


@pytest.mark.parametrize("overrides, field", [
    ({"components": [{"name": "a", "weight": -1}]}, "weight"),
    ({"components": [{"name": "a", "weight": 0}]}, "weight"),
    ({"components": [{"name": "a", "weight": 1, "buckets": [7]}]}, "buckets"),
    ({"components": [{"name": "a", "weight": 1, "buckets": []}]}, "buckets"),
    ({"components": [{"name": "a", "weight": 1, "sources": []}]}, "sources"),
    ({"components": [{"name": "a", "weight": "heavy"}]}, "weight"),
    ({"components": [{"name": "a", "weight": 1, "bucket": [1]}]}, "bucket"),
    ({"components": [{"name": "a b", "weight": 1}]}, "name"),
    ({"components": [{"name": "a", "weight": 1}, {"name": "a", "weight": 2}]}, "duplicate"),
    ({"components": []}, "components"),
    ({"validation_fraction": 1.5}, "validation_fraction"),
    ({"exclude": {"buckets": [9]}}, "exclude.buckets"),
    ({"exclude": {"source": ["x"]}}, "source"),
    ({"inputs": []}, "inputs"),
])
def test_invalid_blends_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        make(**overrides)


def test_load_error_names_the_file(tmp_path):
    path = tmp_path / "blend-bad.yaml"
    path.write_text("components:\n  - {name: a, weight: -2}\ninputs: [x]\n")
    with pytest.raises(ConfigError, match=r"blend-bad.yaml: .*weight"):
        Blend.load(path)


def test_first_matching_component_wins_and_null_bucket_is_explicit():
    blend = make()
    assert blend.route("web", 4) == "high"
    assert blend.route("web", 1) == "rest"
    assert blend.route("web", None) == "rest"  # `rest` has no bucket filter
    only_scored = make(components=[{"name": "scored", "weight": 1, "buckets": [0, 1, 2, 3, 4]}])
    assert only_scored.route("web", None) is None
    with_null = make(components=[{"name": "all", "weight": 1, "buckets": [0, 1, 2, 3, 4, None]}])
    assert with_null.route("web", None) == "all"


def test_exclusion_is_one_edit_and_beats_every_component():
    blend = make()
    assert blend.route("spam", 4) == "high"
    dropped = make(exclude={"sources": ["spam"]})
    assert dropped.route("spam", 4) is None and dropped.route("spam", 0) is None
    assert dropped.route("wiki", 4) == "high"
    assert make(exclude={"ids": ["doc-7"]}).route("wiki", 4, "doc-7") is None
    assert make(exclude={"buckets": [None]}).route("wiki", None) is None


def test_component_inputs_restrict_where_it_reads():
    blend = make(components=[{"name": "mine", "weight": 1, "inputs": ["company"]},
                             {"name": "web", "weight": 1}])
    assert blend.input_paths() == ["company", "curated"]
    assert blend.route("x", 2, input_path="company") == "mine"
    assert blend.route("x", 2, input_path="curated") == "web"


def test_source_filter():
    blend = make(components=[{"name": "books", "weight": 1, "sources": ["books", "stories"]}])
    assert blend.route("stories", 2) == "books" and blend.route("web", 2) is None


def test_single_component_blend():
    blend = single_component_blend(["a", "b"], validation_fraction=0.1)
    assert blend.weights == {"all": 1.0} and blend.route("anything", None, input_path="b") == "all"
