"""Evaluation: held-out loss and bits per byte, TinyWeb QA by ranking, reasoning accuracy, lm-eval bridge.

    from hytron.eval import evaluate_model
    results = evaluate_model("runs/quickstart/model", evals="runs/quickstart/tinyweb")   # also writes eval.json

`hytron.eval.scoring.Scorer` does all log-likelihood work; `hytron.eval.tasks` holds the TinyWeb tasks;
`hytron.eval.lm_eval_bridge` runs lm-evaluation-harness tasks on hytron models in process.
"""

from hytron.eval.harness import evaluate_model, evaluate_model_dir
from hytron.eval.scoring import Scorer, bits_per_byte

__all__ = ["Scorer", "bits_per_byte", "evaluate_model", "evaluate_model_dir"]
