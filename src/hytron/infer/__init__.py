"""Generation on token ids: sampling, thinking budgets, and the continuous-batching engine over HybridLM caches.

    from hytron.infer import Engine, SamplingParams, generate
    results = generate(model, [prompt_ids], SamplingParams(max_tokens=64, temperature=0,
                       thinking=True, max_thinking_tokens=256), stop_ids=tok.stop_ids,
                       decode=tok.decode, think_end_id=tok.think_end_id, newline_ids=ids_with_newline)
"""

from hytron.infer.budget import ThinkingBudget, newline_ids
from hytron.infer.engine import Engine, generate
from hytron.infer.request import Completion, Delta, EngineClosed, EngineError, PromptTooLong, QueueFull, Request
from hytron.infer.sampling import SamplingParams, TokenLogprob, sample
from hytron.infer.text import TextStream

__all__ = ["Completion", "Delta", "Engine", "EngineClosed", "EngineError", "PromptTooLong", "QueueFull", "Request",
           "SamplingParams", "TextStream", "ThinkingBudget", "TokenLogprob", "generate", "newline_ids", "sample"]
