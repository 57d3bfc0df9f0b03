"""Post-training for reasoning: verifiable problems, trace styles, chat SFT data, budgeted solving, evaluation.

    from hytron.reasoning import generate_problems, sft_rows, evaluate_reasoning, plot_budget_curves
    rows = sft_rows(generate_problems(["arithmetic", "world", "ordering"], 1000, seed=0), style="verbose")
    search = sft_rows(generate_problems("subset_sum", 1000, seed=0), style="search")  # depth-first search traces
    result = evaluate_reasoning("runs/sft/model", kinds="arithmetic", budgets=[0, 8, 16, 32, None])
    plot_budget_curves({"sft": result}, "budget.png")

Training lives in `hytron.train.sft` (`hytron sft`) and `hytron.train.rl` (`hytron rl`, prompts from
`problem_prompts`); the thinking budget itself is `hytron.infer`'s (`SamplingParams.max_thinking_tokens`),
shared with the server.
"""

from hytron.reasoning.data import prompt_messages, sft_rows
from hytron.reasoning.distill import shortest_correct_rows
from hytron.reasoning.evaluate import DEFAULT_BUDGETS, evaluate_reasoning, plot_budget_curves
from hytron.reasoning.generation import Attempt, Solver, load_solver, problem_prompt
from hytron.reasoning.prompts import problem_prompts
from hytron.reasoning.tasks import GENERATORS, Problem, check_answer, extract_answer, generate_problems
from hytron.reasoning.traces import concise_trace, search_trace, truncate_trace, verbose_trace

__all__ = ["DEFAULT_BUDGETS", "GENERATORS", "Attempt", "Problem", "Solver", "check_answer", "concise_trace",
           "evaluate_reasoning", "extract_answer", "generate_problems", "load_solver", "plot_budget_curves",
           "problem_prompt", "problem_prompts", "prompt_messages", "search_trace", "sft_rows", "shortest_correct_rows",
           "truncate_trace", "verbose_trace"]
