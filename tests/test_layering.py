"""The package's import layering (README "Layout", ARCHITECTURE.md) holds: lower layers never import higher ones,
no training stage imports another, and the data pipeline runs without torch."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "hytron"

# unit -> layer. A unit is a dotted path under hytron/; a module belongs to the longest unit that prefixes it.
# This is the table of the README's "Layout" section (checked below), in the same order.
LAYERS = {
    "config": 0,
    "data": 1,
    "tokenizer": 2, "packing": 2,
    "model": 3, "lowp": 3, "infer": 3,
    "train": 4, "tune": 4, "reasoning": 4, "eval": 4, "export": 4,
    "pipelines": 5, "claims": 5, "report": 5, "serve": 5,
    "cli": 6,
    "__init__": 0, "__main__": 7,  # the version string; `python -m hytron`, the one caller of the CLI
}
# same-layer imports that are allowed (importer unit -> importee units)
SIDEWAYS = {"lowp": {"model"}, "infer": {"model"}, "tune": {"train"}, "pipelines": {"report"},
            "claims": {"pipelines", "report"}}
# the training loops: each keeps only its own loop body over the shared train/ pieces; none imports another,
# and only pipelines (layer 5) and the CLI call them
STAGES = {"train.pretrain", "train.sft", "train.rl", "tune.finetune"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def _exists(dotted: str) -> bool:
    base = PKG.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def hytron_imports(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every hytron module (dotted, without `hytron.`) a module's source imports, in any form: `import hytron.a.b`,
    `from hytron import a`, `from hytron.a import b` (b a submodule or a name), relative imports, and
    `importlib.import_module("hytron.a")` with a literal name."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()

    def add(dotted: str, names=()):
        parts = dotted.split(".")
        if parts[0] != "hytron":
            return
        base = ".".join(parts[1:])
        subs = [f"{base}.{n}" if base else n for n in names]
        subs = [s for s in subs if _exists(s)]
        found.update(subs or ([base] if base else []))

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for a in node.names:
                add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = package[: len(package) - (node.level - 1)]
                dotted = ".".join(["hytron", *base, *([node.module] if node.module else [])])
            else:
                dotted = node.module or ""
            add(dotted, [a.name for a in node.names])
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in
              ("import_module", "__import__") and node.args):
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                add(arg.value)
            elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                add(str(arg.values[0].value).rstrip("."))  # f"hytron.claims.{name}": at least that package
    return found


def unit(module: str) -> str:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return ".".join(parts[:n])
    raise AssertionError(f"hytron.{module} belongs to no unit of the layering table")


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """What is wrong with one module's imports (empty when it obeys the layering)."""
    mine_unit = unit(module)
    mine = LAYERS[mine_unit]
    out = []
    for dep in sorted(hytron_imports(source, module, is_package)):
        theirs_unit = unit(dep)
        if dep.startswith("cli") and module != "__main__" and not module.startswith("cli"):
            out.append(f"hytron.{module} imports hytron.{dep}; nothing may import the CLI")
            continue
        theirs = LAYERS[theirs_unit]
        neighbour = theirs == mine and theirs_unit in SIDEWAYS.get(mine_unit, ())
        if theirs_unit != mine_unit and not (theirs < mine or neighbour):
            out.append(f"hytron.{module} (layer {mine}) must not import hytron.{dep} (layer {theirs})")
        if dep in STAGES and not dep.startswith(module) and mine <= 4:  # a package may re-export its own
            out.append(f"hytron.{module} imports the training stage hytron.{dep}; stages share train/ pieces, "
                       "only pipelines and the CLI call them")
    return out


def _all_modules():
    return sorted(PKG.rglob("*.py"))


@pytest.mark.parametrize("path", _all_modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_module_respects_layering(path):
    problems = violations(path.read_text(), _module_name(path), path.name == "__init__.py")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("source", "module", "expected"), [
    ("from hytron.train import pretrain\n", "model.hybrid", "must not import hytron.train.pretrain"),
    ("from hytron import train\n", "model.hybrid", "must not import hytron.train"),
    ("import hytron.serve.app as a\n", "eval.harness", "must not import hytron.serve.app"),
    ("from ..train.loop import Run\n", "model.hybrid", "must not import hytron.train.loop"),
    ("from . import pretrain\n", "train.sft", "imports the training stage hytron.train.pretrain"),
    ("from hytron.train.sft import sft\n", "tune.lora", "imports the training stage hytron.train.sft"),
    ("import importlib\nimportlib.import_module('hytron.cli')\n", "report.page", "nothing may import the CLI"),
    ("from hytron.report.cards import write_cards\n", "eval.harness", "must not import hytron.report.cards"),
    ("from hytron.train.rl import Roller\n", "reasoning.generation", "must not import hytron.train.rl"),
])
def test_the_checker_catches_every_import_form(source, module, expected):
    # sources are checked as text: nothing is written into src/
    assert any(expected in v for v in violations(source, module)), violations(source, module)


def test_allowed_edges_pass_the_checker():
    assert violations("from hytron.train.loop import Run\nfrom hytron.train.batches import collate\n",
                      "tune.finetune") == []
    assert violations("from hytron.train.pretrain import pretrain\nfrom hytron.report import write_cards\n",
                      "pipelines.customize") == []


def test_data_pipeline_leaves_torch_unimported():
    modules = sorted(_module_name(p) for p in (PKG / "data").rglob("*.py"))
    code = ("import sys\n" + "".join(f"import hytron.{m}\n" for m in modules)
            + "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
            + "print(len(loaded), loaded[:5])\n")
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("0 "), f"importing hytron.data pulled in torch: {done.stdout}"


def test_readme_layout_is_this_table():
    """The README's Layout section lists every unit with the layer this test enforces."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    table = {}
    for row in re.findall(r"^\| *(\d) *\|([^|]+)\|", section, flags=re.M):
        for name in re.findall(r"`([\w.]+)/?`", row[1]):
            table[name] = int(row[0])
    expected = {u: layer for u, layer in LAYERS.items() if not u.startswith("__")}
    assert table == expected
