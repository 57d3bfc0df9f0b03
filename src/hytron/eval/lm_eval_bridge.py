"""Bridge to EleutherAI lm-evaluation-harness: an `LM` for hytron models, local offline tasks, and a runner.

    from hytron.eval.lm_eval_bridge import run_lm_eval, write_tinyweb_tasks
    tasks_dir = write_tinyweb_tasks("tinyweb/", "lm_eval_tasks/")          # YAML + JSONL, absolute paths
    results = run_lm_eval("runs/x/model", ["hytron_world_qa"], include_path=tasks_dir, limit=100)

`HytronLM` implements the three request types of lm-eval's `LM` (`loglikelihood`, `loglikelihood_rolling`,
`generate_until`) on `hytron.eval.scoring.Scorer`, in process: no server, no Hugging Face tokenizer, no
network. It tokenizes as lm-eval's own `hf` backend does (no BOS before a context unless the tokenizer adds
one), so its per-item log-likelihoods equal `lm_eval --model hf` on the same checkpoint. Any lm-eval task
whose data files are local runs offline (we set `HF_DATASETS_OFFLINE=1`); standard tasks (hellaswag, arc, ...)
run too once their datasets are in the local Hugging Face cache. The CLI: `hytron eval MODEL_DIR --tasks none
--lm-eval TASK[,TASK] --lm-eval-include DIR` (`--tasks none`: the lm-eval tasks only). lm-eval is an optional
dependency (`pip install 'hytron[eval]'`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from hytron.eval.scoring import Scorer
from hytron.eval.tasks import QA_TEMPLATE, arithmetic_items, evals_dir, world_qa_items


def _lm_eval():
    try:
        import lm_eval  # noqa: F401
        from lm_eval.api.model import TemplateLM
    except ImportError as e:
        raise ImportError("the lm-eval bridge needs lm-evaluation-harness: pip install 'hytron[eval]' "
                          "(or pip install lm-eval)") from e
    return TemplateLM


def make_lm(scorer: Scorer):
    """An lm-eval `LM` instance over `scorer` (the class is built lazily so lm-eval stays optional)."""
    TemplateLM = _lm_eval()
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    class HytronLM(TemplateLM):
        """lm-evaluation-harness model for hytron HybridLM checkpoints (in process, batched, CPU or GPU).

        It tokenizes exactly as lm-eval's `hf` backend (`HFLM`, default arguments) does, so each request
        scores as there: a text gets what the tokenizer's post-processor adds (BOS for tokenizers that add
        it, nothing for hytron's own, which adds none) unless it already starts with the prefix token's text;
        special-token strings in a text are parsed as tokens, as transformers' tokenizers parse them; a
        context and continuation are tokenized together and split (lm-eval's `TemplateLM._encode_pair`); an
        empty context and each rolling window start from the prefix token (BOS, else EOS). Our own harness
        (`hytron.eval.tasks`) keeps hytron's training convention instead: `<s>` before every context."""

        def __init__(self, scorer: Scorer):
            super().__init__()
            self.scorer = scorer
            tok = scorer.tokenizer
            self._prefix_id = tok.bos_id if tok.bos_id is not None else tok.eos_id
            self._prefix_text = tok.decode([self._prefix_id]) if self._prefix_id is not None else None

        @property
        def tokenizer_name(self) -> str:
            return "hytron"

        @property
        def eot_token_id(self) -> int:
            return self.scorer.tokenizer.eos_id

        @property
        def prefix_token_id(self) -> int:
            return self._prefix_id

        @property
        def max_length(self) -> int:
            return self.scorer.max_len

        def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
            if add_special_tokens is None:  # HFLM: no second BOS before a text that already starts with one
                add_special_tokens = not (self._prefix_text and string.startswith(self._prefix_text))
            return self.scorer.tokenizer.encode(string, parse_special=True, add_special_tokens=add_special_tokens)

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
            return self.scorer.loglikelihood_ids([(ctx, cont) for _, ctx, cont in requests])

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
            windows, owners = [], []
            for k, r in enumerate(requests):  # HFLM's windows: the prefix token, then max_length predictions each
                for pair in get_rolling_token_windows(self.tok_encode(r.args[0]), self.prefix_token_id,
                                                      self.max_length, context_len=1):
                    windows.append(make_disjoint_window(pair))
                    owners.append(k)
            totals = [0.0] * len(requests)
            for k, (lp, _) in zip(owners, self.scorer.loglikelihood_ids(windows)):
                totals[k] += lp
            return totals

        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            out = []
            for r in requests:  # one at a time: each request may carry its own stop strings and length
                context, kwargs = r.args[0], dict(r.args[1] or {})
                until = kwargs.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                if kwargs.get("do_sample") or float(kwargs.get("temperature", 0) or 0) > 0:
                    raise ValueError("HytronLM.generate_until: only greedy decoding is supported "
                                     "(do_sample=false, temperature=0)")
                max_tokens = int(kwargs.get("max_gen_toks", 256))  # HFLM's default
                text = self.scorer.generate([self.tok_encode(context)], max_tokens=max_tokens, stop=until)[0]
                for s in until:  # the engine stops at a stop string; cut anything a stop id left behind
                    if s and s in text:
                        text = text.split(s, 1)[0]
                out.append(text)
            return out

    return HytronLM(scorer)


MC_TASK_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: multiple_choice
test_split: test
doc_to_text: {text}
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def write_tinyweb_tasks(tinyweb: str | Path, out_dir: str | Path, limit: int | None = None) -> Path:
    """Write TinyWeb's QA sets as lm-eval multiple-choice tasks `hytron_world_qa` and `hytron_arithmetic`
    (YAML + JSONL with absolute paths) into `out_dir`; the items equal those of `hytron eval`."""
    src = evals_dir(tinyweb)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    template = json.dumps(QA_TEMPLATE.replace("{question}", "{{question}}"))
    for name, items in (("hytron_world_qa", world_qa_items(src / "world_qa.jsonl", limit=limit)),
                        ("hytron_arithmetic", arithmetic_items(src / "arithmetic.jsonl", limit=limit))):
        data = out / f"{name}.jsonl"
        data.write_text("".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items), encoding="utf-8")
        (out / f"{name}.yaml").write_text(MC_TASK_YAML.format(name=name, data=json.dumps(str(data)), text=template))
    return out


def run_lm_eval(model: str | Path | Scorer, tasks: Sequence[str], *, include_path: str | Path | None = None,
                limit: int | float | None = None, num_fewshot: int | None = None) -> dict:
    """Run lm-eval tasks on a hytron model offline; returns {task: {metric: value}} plus lm-eval's versions."""
    _lm_eval()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    scorer = model if isinstance(model, Scorer) else Scorer.load(model)
    manager = None
    if include_path:  # indexing lm-eval's thousands of bundled tasks takes seconds: skip it when not needed
        manager = TaskManager(include_path=str(include_path), include_defaults=False)
        if any(t not in manager.all_tasks for t in tasks):
            manager = None
    manager = manager or TaskManager(include_path=str(include_path) if include_path else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ValueError(f"lm-eval: unknown task(s) {unknown}; local tasks need --lm-eval-include DIR "
                         f"(a folder of task YAML files)")
    res = simple_evaluate(model=make_lm(scorer), tasks=list(tasks), task_manager=manager, limit=limit,
                          num_fewshot=num_fewshot, log_samples=False, bootstrap_iters=0)
    out = {}
    for task, metrics in (res or {}).get("results", {}).items():
        clean = {}
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and "stderr" not in k:
                clean[k.split(",")[0]] = v
        out[task] = clean
    return {"tasks": out, "n_samples": {k: v.get("effective", v) if isinstance(v, dict) else v
                                        for k, v in (res or {}).get("n-samples", {}).items()}}
