"""Generation on token ids: sampling, thinking budgets, and the continuous-batching engine over HybridLM caches.

Offline, many prompts at once (results in prompt order)::

    from hytron.infer import SamplingParams, generate

    prompt = tok.apply_chat_template(messages, add_generation_prompt=True)  # ends in "<think>\\n" when on
    [c] = generate(model, [prompt], SamplingParams(max_tokens=512, temperature=0, thinking=True,
                                                   max_thinking_tokens=256), max_slots=8, tokenizer=tok)
    c.reasoning, c.text, c.reasoning_tokens, c.thinking_forced, c.finish_reason, c.token_ids

`thinking=True` means the prompt leaves a `<think>` section open (the budget applies, thinking text goes to
`reasoning`); `False` means answer only (`<think>`/`</think>` are never sampled); `None` is raw text.
`tokenizer=tok` sets what the tokenizer fixes (stop ids, thinking markers, newline ids for the budget) exactly
as `hytron serve` does (`tokenizer_settings`). Online: `Engine.for_tokenizer(model, tok, **kw).start()`, then
`req = engine.submit(ids, params)` from any thread; iterate `req` for `Delta`s (or pass `on_delta=`),
`req.result()` waits, `req.cancel()` frees the slot.
`speculative_tokens=K` (to `Engine` or `generate`) drafts K tokens per step with the model's MTP head: the same
greedy tokens and sampling distribution, `c.acceptance_rate` and `c.mean_accepted_length` per completion
(`hytron.infer.speculative`); `speculative_acceptance(model, prompts, k)` measures them over many prompts.
`decode_mode=` picks the decode step: "static" (default; a static-shape step over
a cache sized once), "compile" (that step torch.compiled for one running request; `hytron serve`'s default) or
"eager" (the model's own cached forward), all with the same tokens (`hytron.infer.engine.DECODE_MODES`).
"""

from hytron.infer.budget import ThinkingBudget, newline_ids
from hytron.infer.engine import Engine, generate, speculative_acceptance, tokenizer_settings
from hytron.infer.request import Completion, Delta, EngineClosed, EngineError, PromptTooLong, QueueFull, Request
from hytron.infer.sampling import SamplingParams, TokenLogprob, sample
from hytron.infer.text import TextStream

__all__ = ["Completion", "Delta", "Engine", "EngineClosed", "EngineError", "PromptTooLong", "QueueFull", "Request",
           "SamplingParams", "TextStream", "ThinkingBudget", "TokenLogprob", "generate", "newline_ids", "sample",
           "speculative_acceptance", "tokenizer_settings"]
