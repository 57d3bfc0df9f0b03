"""The command line as a whole: the verb table, every verb's --help, the frozen flag set, one --set parser,
and the one-line error for a missing optional extra."""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from hytron.cli import VERBS, build_parser, main
from hytron.config import ConfigError, apply_overrides

# Every verb and its arguments (positionals in capitals). Adding or removing a flag means editing this table on
# purpose: new behaviour belongs in a recipe or config field first (torchtitan's test_no_new_cli_options).
FLAGS = {
    "quickstart": "--out --size --input --docs --steps --preset --blend --workers --seed",
    "model-info": "NAME --context --dtype-bytes",
    "demo": "--out --preset",
    "tinyweb": "--docs --out --seed",
    "curate": "INPUTS --out --config --set --profile --workers --executor --overwrite --explain --quiet",
    "tokenizer train": "INPUTS --blend --out --vocab-size --min-frequency --max-docs",
    "tokenize": "--blend --input --tokenizer --out --val-fraction --seed --shard-tokens --overwrite",
    "pretrain": "RECIPE --set --section --no-progress",
    "reasoning-data": "--out --kinds --n --seed --style --off-share --truncated-share",
    "sft": "RECIPE --set --section --no-progress",
    "reasoning-distill": "MODEL_DIR --out --kinds --n --seed --samples --temperature --max-tokens --off-share",
    "rl": "RECIPE --set --section --no-progress",
    "lora": "RECIPE --set --section --no-progress",
    "merge": "MODEL ADAPTER --out",
    "distill": "RECIPE --set --section --no-progress",
    "prune": "RECIPE --set --section --no-progress",
    "customize": "RECIPE --set",
    "eval": "MODEL_DIR --evals --tasks --limit --lm-eval --lm-eval-include --write-lm-eval-tasks --reasoning-n "
            "--max-tokens --budgets --batch-size --no-write",
    "reproduce": "CLAIM --out --quick --seeds --set --threads --jobs",
    "report": "RUN_DIR --out --claims --cards",
    "serve": "MODEL_DIR --host --port --api-key --served-model-name --max-slots --burst-wait-ms --max-waiting "
             "--max-model-len --max-tokens-limit --max-thinking-tokens --threads --read-timeout --shutdown-timeout "
             "--allowed-host --cors-origin --max-connections --template-timeout --grammar-timeout --log-level "
             "--default-chat-template-kwargs "
             "--tool-parser --dtype --speculative-tokens --decode-mode --prefix-cache-mb --prefix-cache-block",
    "chat": "MODEL_DIR --temperature --max-tokens --max-thinking-tokens --no-think --seed --max-model-len "
            "--max-slots --threads --dtype --speculative-tokens --decode-mode --prefix-cache-mb --prefix-cache-block",
    "export gguf": "MODEL_DIR --out --outtype",
}


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subs[0].choices) if subs else {}


def _commands() -> dict[str, argparse.ArgumentParser]:
    """'verb' (or 'verb action' for verbs with actions) -> its parser."""
    out = {}
    for verb, parser in _subcommands(build_parser()).items():
        actions = _subcommands(parser)
        out.update({f"{verb} {a}": p for a, p in actions.items()} if actions else {verb: parser})
    return out


def _flags(parser: argparse.ArgumentParser) -> str:
    return " ".join(a.option_strings[-1] if a.option_strings else a.dest.upper() for a in parser._actions
                    if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)))


def test_the_verb_table_is_the_command_line():
    assert list(_subcommands(build_parser())) == list(VERBS)


def test_flag_set_is_frozen():
    assert {name: _flags(p) for name, p in _commands().items()} == FLAGS


@pytest.mark.parametrize("command", list(FLAGS))
def test_every_verb_has_working_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([*command.split(), "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: hytron {command}") and "options:" in out


def test_set_overrides_reach_nested_fields_and_parse_values_as_yaml():
    data = apply_overrides({"optim": {"lr": 1.0}, "steps": 3}, ["optim.lr=1e-3", "model.overrides.num_layers=2",
                                                              "data.weights={a: 0.5}", "name=x=y"])
    assert data == {"optim": {"lr": 1e-3}, "steps": 3, "model": {"overrides": {"num_layers": 2}},
                    "data": {"weights": {"a": 0.5}}, "name": "x=y"}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["optim.lr"])
    with pytest.raises(ConfigError, match="steps is not a section"):
        apply_overrides({"steps": 3}, ["steps.n=1"])


@pytest.mark.parametrize("verb", ["pretrain", "sft", "rl", "customize"])
def test_set_names_a_bad_field_in_one_line(verb, capsys):
    example = {"pretrain": "tiny", "sft": "sft-tiny", "rl": "rl-tiny", "customize": "customize"}[verb]
    assert main([verb, example, "--set", "no_such_field=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hytron {verb}: error:") and "no_such_field" in err and "\n" not in err


def test_a_missing_optional_extra_is_one_line_naming_it(tmp_path):
    # quickstart without the `curate` extra: hide xxhash from a fresh interpreter
    code = ("import sys; sys.modules['xxhash'] = None\nfrom hytron.cli import main\n"
            f"sys.exit(main(['quickstart', '--size', 'ci', '--docs', '50', '--out', {str(tmp_path / 'q')!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={"PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"),
                                             "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if "error" in line]
    assert lines == ["hytron quickstart: error: needs xxhash, an optional dependency: pip install 'hytron[curate]'"]
    assert "Traceback" not in done.stderr
