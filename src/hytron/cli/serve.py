"""Serving verbs: `hytron serve MODEL_DIR` (OpenAI-compatible HTTP server + chat page) and `hytron chat MODEL_DIR`."""

from __future__ import annotations

import argparse
import json
import os


def add_serve(sub) -> None:
    p = sub.add_parser("serve", help="serve a model over the OpenAI API (vLLM dialect) with a chat page at /")
    p.add_argument("model_dir", help="model directory (Nemotron-H format with tokenizer files)")
    p.add_argument("--host", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, help="default 8000")
    p.add_argument("--api-key", default=os.environ.get("HYTRON_API_KEY"),
                   help="require this key (Authorization: Bearer KEY) on every route but /health and / "
                        "(default: $HYTRON_API_KEY)")
    p.add_argument("--served-model-name", help="model id clients use (default: the directory name)")
    p.add_argument("--max-slots", type=int, help="requests decoded together (default 8)")
    p.add_argument("--burst-wait-ms", type=float, metavar="MS",
                   help="when idle, on a request, wait up to MS while more keep arriving (each within 1 ms), so "
                        "that requests sent at once prefill together (default 5; 0: start at once)")
    p.add_argument("--max-waiting", type=int, help="queued requests beyond the slots; more get 429 (default 64)")
    p.add_argument("--max-model-len", type=int, help="context limit, prompt + completion (default: the model's)")
    p.add_argument("--max-tokens-limit", type=int, help="largest max_tokens a request may ask (default 4096)")
    p.add_argument("--max-thinking-tokens", type=int, help="default thinking budget (requests may set their own)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--read-timeout", type=float,
                   help="seconds a client has to send a whole request (headers and body); then it is closed "
                        "(default 30)")
    p.add_argument("--shutdown-timeout", type=float,
                   help="on SIGTERM/SIGINT, seconds requests in flight get before they are cancelled (default 10)")
    p.add_argument("--allowed-host", action="append", metavar="HOST",
                   help="a Host name clients may use (repeatable; *.example.com matches subdomains; default: the "
                        "bound address's names, any for 0.0.0.0)")
    p.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                   help="a web origin (https://app.example) whose pages may call the API (repeatable; default: none)")
    p.add_argument("--max-connections", type=int,
                   help="connections served at once (default: the open-file limit less a reserve); past it the "
                        "oldest idle connection is closed, or the new one gets a 503")
    p.add_argument("--template-timeout", type=float,
                   help="seconds one chat-template render may take (a longer one is a 400; default 5)")
    p.add_argument("--grammar-timeout", type=float,
                   help="seconds a response_format schema or forced tool call's grammar may take to compile "
                        "(longer is a 400; default 10)")
    p.add_argument("--log-level", default="warning")
    p.add_argument("--default-chat-template-kwargs", type=_json_object, metavar="JSON",
                   help='chat template variables every chat request starts from, e.g. \'{"enable_thinking": false}\' '
                        "(thinking off for clients that do not ask); a request's chat_template_kwargs or "
                        "reasoning_effort override them")
    p.add_argument("--tool-parser", choices=["auto", "xml", "json", "none"],
                   help="tool-call format in model output: xml (Nemotron 3), json (Nano 2 <TOOLCALL>), none; "
                        "auto: the one the chat template writes")
    _add_dtype(p)
    _add_speculative(p)
    _add_prefix_cache(p)
    p.set_defaults(func=cmd_serve)


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {type(value).__name__}")
    return value


def _add_speculative(p) -> None:
    p.add_argument("--speculative-tokens", type=int, metavar="K",
                   help="draft K tokens per step with the model's MTP head and verify them in one forward (same "
                        "greedy tokens, same sampling distribution; needs a model with an MTP head; default 0: off)")
    p.add_argument("--decode-mode", choices=["compile", "static", "eager"],
                   help="decode step: compile (default: a static-shape step, torch.compiled once at start, for "
                        "one running request and for batches), static (never compiled), eager (the model's own "
                        "cached forward)")


def _add_prefix_cache(p) -> None:
    p.add_argument("--prefix-cache-mb", type=float, metavar="MB",
                   help="MiB of prompt-prefix state (attention KV + Mamba state snapshots) kept to skip prefilling a "
                        "shared prefix again, least recently used evicted first (default 512; 0: off)")
    p.add_argument("--prefix-cache-block", type=int, metavar="TOKENS",
                   help="prefix-cache block: prefixes are reused in multiples of it, each block holds one Mamba "
                        "state snapshot (default 128)")


def _add_dtype(p) -> None:
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="compute dtype (default: float32 on CPU, the checkpoint's own on GPU)")


# flag -> ServeConfig field; a flag left out keeps ServeConfig's default (the one owner of serving defaults)
_SERVE_FIELDS = {"host": "host", "port": "port", "api_key": "api_key", "served_model_name": "model_name",
                 "max_slots": "max_slots", "max_waiting": "max_waiting", "max_model_len": "max_len",
                 "max_tokens_limit": "max_tokens_limit", "max_thinking_tokens": "max_thinking_tokens",
                 "threads": "threads", "read_timeout": "read_timeout", "shutdown_timeout": "shutdown_timeout",
                 "allowed_host": "allowed_hosts", "cors_origin": "cors_origins", "tool_parser": "tool_parser",
                 "dtype": "dtype", "max_connections": "max_connections", "template_timeout": "template_seconds",
                 "grammar_timeout": "grammar_seconds", "default_chat_template_kwargs": "default_chat_template_kwargs",
                 "speculative_tokens": "speculative_tokens", "prefix_cache_mb": "prefix_cache_mb",
                 "prefix_cache_block": "prefix_cache_block",
                 "decode_mode": "decode_mode", "burst_wait_ms": "burst_wait_ms"}


def _config(args, **fixed):
    """The `ServeConfig` of the flags given (others keep its defaults), plus `fixed` fields."""
    from hytron.serve import ServeConfig

    given = {field: getattr(args, flag) for flag, field in _SERVE_FIELDS.items()
             if getattr(args, flag, None) is not None}
    for field in ("allowed_hosts", "cors_origins"):  # repeatable flags: lists -> tuples
        if field in given:
            given[field] = tuple(given[field])
    return ServeConfig(**{**given, **fixed})


def _compile(backend) -> None:
    if backend.engine.decode_mode == "compile":  # once, before the first request (else that request waits for it)
        print("hytron serve: compiling the decode step (decode mode compile; --decode-mode static skips it) ...",
              flush=True)
        print(f"hytron serve: decode step compiled in {backend.engine.warmup():.1f} s", flush=True)


def cmd_serve(args: argparse.Namespace) -> int:
    from hytron.serve import Backend, create_app, http

    cfg = _config(args)
    connections, fd_limit = http.connection_limit(cfg.max_connections)  # a bad --max-connections: before loading
    backend = Backend.load_in_engine_thread(args.model_dir, cfg, _compile)
    if cfg.host not in ("127.0.0.1", "localhost", "::1") and not cfg.api_key:
        print(f"warning: serving on {cfg.host} without an API key: anyone who can reach it can use it")
    spec = f", speculating {cfg.speculative_tokens} tokens with the MTP head" if cfg.speculative_tokens else ""
    pc = backend.engine.prefix_cache
    spec += (f", prefix cache {cfg.prefix_cache_mb:g} MiB in blocks of {pc.block_size}" if pc is not None
             else ", prefix cache off")
    print(f"hytron serve: {backend.name} ({backend.model.num_params():,} params, context {backend.max_len}{spec}) "
          f"on http://{cfg.host}:{cfg.port}  (chat page at /, API at /v1); open-file limit {fd_limit}, "
          f"max connections {connections}", flush=True)
    http.run(create_app(backend), cfg.host, cfg.port, cfg.read_timeout, cfg.shutdown_timeout, args.log_level,
             max_connections=connections)
    return 0


def add_chat(sub) -> None:
    p = sub.add_parser("chat", help="chat with a model in the terminal (/think, /no_think, /budget N, /reset)")
    p.add_argument("model_dir", help="model directory (Nemotron-H format with tokenizer files)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--max-thinking-tokens", type=int, help="thinking budget (default: unlimited)")
    p.add_argument("--no-think", action="store_true", help="start with thinking off")
    p.add_argument("--seed", type=int)
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--max-slots", type=int, default=1)
    p.add_argument("--threads", type=int)
    _add_dtype(p)
    _add_speculative(p)
    _add_prefix_cache(p)
    p.set_defaults(func=cmd_chat)


def cmd_chat(args: argparse.Namespace) -> int:
    from hytron.serve.terminal import ChatSettings, chat_loop

    settings = ChatSettings(thinking=not args.no_think, max_thinking_tokens=args.max_thinking_tokens,
                            max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed)
    # the budget is the chat's own (it changes with /budget), not a server default
    return chat_loop(args.model_dir, _config(args, max_thinking_tokens=None), settings)
