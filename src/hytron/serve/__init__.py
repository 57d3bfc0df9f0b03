"""OpenAI-compatible serving of hytron models: the HTTP app, the engine backend, the chat page and terminal chat.

    hytron serve MODEL_DIR [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--max-thinking-tokens N]
                 [--read-timeout 30] [--shutdown-timeout 10] [--allowed-host NAME]... [--cors-origin URL]...
    hytron chat MODEL_DIR                      # the same engine in the terminal

Endpoints (vLLM's dialect): `/v1/models`, `/v1/chat/completions`, `/v1/responses` (OpenAI's Responses API on
top of chat), `/v1/completions` (`echo` + `logprobs` for log-likelihood evaluation), `/tokenize`, `/detokenize`,
`/tokenizer_info`, `/health`, `/metrics`
(Prometheus), and the chat page at `/`. JSON bodies must say `Content-Type: application/json`, the Host
header must name the bound address (or an `--allowed-host`), and CORS is off unless `--cors-origin` is given,
so a web page the user visits cannot drive a keyless server. Reasoning comes back in `message.reasoning` and
`message.reasoning_content` (`delta.reasoning` when streaming); per request, `thinking_token_budget` caps the
thinking, and `chat_template_kwargs.enable_thinking`, `reasoning_effort: "none"` or `/no_think` in a message
turn it off.

Evaluate a served model with lm-evaluation-harness, offline (it uses the server's tokenizer endpoints):

    HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 lm_eval --model local-completions \\
        --model_args model=NAME,base_url=http://127.0.0.1:8000/v1/completions,num_concurrent=1,max_retries=1,\\
max_length=2048,tokenized_requests=True --tasks TASK --include_path DIR_WITH_TASK_YAML
"""

from hytron.serve.app import create_app
from hytron.serve.backend import Backend, ServeConfig

__all__ = ["Backend", "ServeConfig", "create_app"]
