"""The package's import layering (ARCHITECTURE.md) holds: lower layers never import higher ones."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "hytron"

# top-level component -> layer; a component is the first name under hytron/ (module or sub-package)
LAYERS = {
    "__init__": 0, "config": 0,
    "data": 1,
    "tokenizer": 2, "packing": 2,
    "model": 3, "lowp": 3, "infer": 3,
    "train": 4, "reasoning": 4, "eval": 4, "tune": 4, "export": 4,
    "serve": 5, "claims": 5, "report": 5, "quickstart": 5,
    "cli": 6, "__main__": 7,
}
# same-layer imports that are allowed (importer -> importees)
SIDEWAYS = {"lowp": {"model"}, "infer": {"model"}, "train": {"lowp", "infer"}, "eval": {"infer", "train"},
            "reasoning": {"infer", "train"}, "quickstart": {"report"}, "claims": {"quickstart", "report"}}


def _component(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def _hytron_imports(path: Path) -> set[str]:
    """Top-level hytron components imported by a module (absolute and relative imports)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel_parts = path.relative_to(PKG).with_suffix("").parts
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the importing module's package
                pkg = list(rel_parts[:-1])
                base = pkg[: len(pkg) - (node.level - 1)]
                if base or node.module:
                    names = [".".join(["hytron", *base, *([node.module] if node.module else [])])]
                else:  # `from . import x` at the package root
                    names = [f"hytron.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
        for n in names:
            parts = n.split(".")
            if parts[0] == "hytron" and len(parts) > 1:
                found.add(parts[1])
    return found


def _all_modules():
    return sorted(p for p in PKG.rglob("*.py"))


def _imports_torch(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "torch" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "torch":
            return True
    return False


@pytest.mark.parametrize("path", _all_modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_module_respects_layering(path):
    comp = _component(path)
    assert comp in LAYERS, f"{path.relative_to(PKG)}: component {comp!r} has no layer in ARCHITECTURE.md"
    mine = LAYERS[comp]
    for dep in _hytron_imports(path) - {comp}:
        if comp != "__main__":  # `python -m hytron` is the one entry point that runs the CLI
            assert dep != "cli", f"{path.relative_to(PKG)} imports hytron.cli; nothing may import cli"
        assert dep in LAYERS, f"{path.relative_to(PKG)} imports unknown component hytron.{dep}"
        theirs = LAYERS[dep]
        ok = theirs < mine or (theirs == mine and dep in SIDEWAYS.get(comp, set()))
        assert ok, f"{path.relative_to(PKG)} (layer {mine}) must not import hytron.{dep} (layer {theirs})"


def test_data_layer_never_imports_torch():
    offenders = [str(p.relative_to(PKG)) for p in (PKG / "data").rglob("*.py") if _imports_torch(p)]
    assert not offenders, f"curation must run without torch: {offenders}"


def test_layering_checker_catches_a_violation(tmp_path):
    # the checker itself must be able to fail: a model module importing training code is rejected
    fake = PKG / "model" / "_layering_probe.py"
    fake.write_text("from hytron.train import pretrain\n")
    try:
        with pytest.raises(AssertionError, match="must not import hytron.train"):
            test_module_respects_layering(fake)
    finally:
        fake.unlink()
