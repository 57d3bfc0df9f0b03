"""Byte-level BPE tokenizer: training, encode/decode, special tokens and the /think-aware chat template.

Files written by `Tokenizer.save(dir)` are the Hugging Face layout (`tokenizer.json`,
`tokenizer_config.json`, `special_tokens_map.json`), so `transformers.AutoTokenizer.from_pretrained(dir)`
loads the tokenizer and its `apply_chat_template` renders exactly what `Tokenizer.apply_chat_template` does.

Special tokens (ids fixed, in this order, before any learned merge):

    0 <pad>   1 <s> (BOS)   2 </s> (EOS, end of document)
    3 <|im_start|>   4 <|im_end|> (end of turn)   5 <think>   6 </think>
    7 <tool_call>  8 </tool_call>  9 <tool_response>  10 </tool_response>   11-15 <|reserved_N|>

Chat format: ChatML-style turn markers (`<|im_start|>ROLE\\n ... <|im_end|>\\n`, the role name is plain
text), chosen over Nemotron Nano 2's opaque `<SPECIAL_10>/<SPECIAL_11>/<SPECIAL_12>` because every chat
tool already recognises them; the *reasoning control* is Nano 2's (research/reasoning-and-fullstack.md
§A1.1):

- reasoning is on by default (`enable_thinking=True`); `/think` or `/no_think` anywhere in a system or user
  message switches it, the last flag found wins, and both flags are removed from the rendered text;
- the generation prompt pre-fills `<think>\\n` (reasoning on) or the empty pair `<think></think>` (off);
- earlier assistant turns keep only their answer (the text after `</think>`), rendered as
  `<think></think>ANSWER`; the last assistant turn keeps its reasoning as `<think>\\nREASONING\\n</think>\\nANSWER`.
  Reasoning may be given inline (`<think>...</think>` in `content`) or as `reasoning_content`; a last turn
  with `<think>` but no `</think>` is an unfinished trace and stays open, so `continue_final_message=True`
  continues the reasoning (or, after a closed trace, the answer) as Nano 2's budget-control client does.

Every assistant turn therefore begins with the special token `<think>`, so token boundaries never straddle
the role header and the content: tokenizing the rendered string (what transformers does) and our
span-tracking render give identical ids, and the assistant mask (1 on assistant content + `<|im_end|>`) is
exact. Documents for pre-training are encoded with special-token strings treated as plain text
(`encode(text)`), so a web page that contains "<s>" cannot inject a control token.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
THINK_START, THINK_END = "<think>", "</think>"
SPECIAL_TOKENS: tuple[str, ...] = (
    PAD, BOS, EOS, IM_START, IM_END, THINK_START, THINK_END,
    "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
    *(f"<|reserved_{i}|>" for i in range(5)),
)

# The one chat template. `{% generation %}` marks what the assistant produces (content + end of turn): our
# renderer and transformers (`return_assistant_tokens_mask=True`) both turn it into the loss mask.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(think=(enable_thinking if enable_thinking is defined else true)) -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] in ['system', 'user'] and m['content'] is string -%}"
    "{%- set on = m['content'].rfind('/think') -%}"
    "{%- set off = m['content'].rfind('/no_think') -%}"
    "{%- if on > off -%}{%- set ns.think = true -%}"
    "{%- elif off > on -%}{%- set ns.think = false -%}{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{{- bos_token -}}"
    "{%- for m in messages -%}"
    "{%- set content = m['content'] if m['content'] is string else '' -%}"
    "{%- if m['role'] == 'assistant' -%}"
    "{%- set unfinished = false -%}"
    "{%- if m['reasoning_content'] is defined and m['reasoning_content'] -%}"
    "{%- set reasoning = m['reasoning_content'] | trim -%}{%- set answer = content | trim -%}"
    "{%- elif '</think>' in content -%}"
    "{%- set reasoning = content.split('</think>')[0].replace('<think>', '') | trim -%}"
    "{%- set answer = content.split('</think>')[-1] | trim -%}"
    "{%- elif '<think>' in content -%}"
    "{%- set reasoning = content.split('<think>')[-1] | trim -%}{%- set answer = '' -%}"
    "{%- set unfinished = true -%}"
    "{%- else -%}"
    "{%- set reasoning = '' -%}{%- set answer = content | trim -%}"
    "{%- endif -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- generation -%}"
    "{%- if reasoning and loop.last -%}"
    "{{- '<think>\\n' + reasoning -}}"
    "{%- if not unfinished -%}{{- '\\n</think>\\n' + answer -}}{%- endif -%}"
    "{%- else -%}"
    "{{- '<think></think>' + answer -}}"
    "{%- endif -%}"
    "{{- '<|im_end|>' -}}"
    "{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{%- if m['role'] in ['system', 'user'] -%}"
    "{%- set content = content.replace('/no_think', '').replace('/think', '') | trim -%}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + content + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' + ('<think>\\n' if ns.think else '<think></think>') -}}"
    "{%- endif -%}"
)

_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "  # the marker transformers uses, so both cut at the same place


def _compile_template(source: str):
    """Compile a chat template the way transformers does, with a `generation` tag that records spans."""
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationSpans(Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_mark", [nodes.Name("_spans", "load"),
                                                              nodes.Name("_rendered", "load")]),
                                   [], [], body).set_lineno(lineno)

        def _mark(self, spans, rendered, caller):
            text = caller()
            if spans is not None:  # only while rendering through `render_chat`
                start = sum(len(b) for b in rendered)
                spans.append((start, start + len(text)))
            return text

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationSpans, jinja2.ext.loopcontrols])
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


class Tokenizer:
    """A trained byte-level BPE tokenizer with hytron's special tokens and chat template."""

    def __init__(self, backend: Any, chat_template: str = CHAT_TEMPLATE, model_max_length: int = 1 << 20):
        self._tok = backend  # a `tokenizers.Tokenizer`; parses special-token strings (chat rendering)
        # a twin that treats special-token strings as plain text (documents); two objects instead of toggling
        # one flag, so concurrent encode/render calls (a server's threads) cannot see each other's mode
        self._plain = type(backend).from_str(backend.to_str())
        self._plain.encode_special_tokens = True
        backend.encode_special_tokens = False
        self.chat_template = chat_template
        self.model_max_length = model_max_length
        self._template = None
        ids = {t: backend.token_to_id(t) for t in SPECIAL_TOKENS}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"tokenizer is missing hytron special tokens {missing}; train it with Tokenizer.train")
        self.pad_id, self.bos_id, self.eos_id = ids[PAD], ids[BOS], ids[EOS]
        self.im_start_id, self.im_end_id = ids[IM_START], ids[IM_END]
        self.think_start_id, self.think_end_id = ids[THINK_START], ids[THINK_END]
        self.special_ids = frozenset(ids.values())

    # ---- training and files ----
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 4096, *, min_frequency: int = 2,
              length: int | None = None, show_progress: bool = False) -> Tokenizer:
        """Learn a byte-level BPE vocabulary of `vocab_size` ids (special tokens included) from `texts`."""
        from tokenizers import Tokenizer as Backend
        from tokenizers import decoders, models, pre_tokenizers, trainers

        min_vocab = len(SPECIAL_TOKENS) + 256
        if not isinstance(vocab_size, int) or vocab_size < min_vocab:
            raise ValueError(f"vocab_size must be an integer >= {min_vocab} (256 bytes + "
                             f"{len(SPECIAL_TOKENS)} special tokens), got {vocab_size!r}")
        backend = Backend(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=show_progress,
        )
        backend.train_from_iterator(_nonempty(texts), trainer=trainer, length=length)
        return cls(backend)

    def save(self, directory: str | Path) -> Path:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(directory / "tokenizer.json"))
        specials = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **specials,
            "additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in (PAD, BOS, EOS)],
            "add_bos_token": False,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": self.model_max_length,
            "chat_template": self.chat_template,
            "hytron": {"format": "hytron-tokenizer-v1", "end_of_turn_token": IM_END},
        }
        (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
        special_map = {**specials, "additional_special_tokens": config["additional_special_tokens"]}
        (directory / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Tokenizer:
        """Load a tokenizer directory written by `save` (or any model directory that carries one)."""
        from tokenizers import Tokenizer as Backend

        directory = Path(directory)
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {directory} (train one with `hytron tokenizer train`)")
        backend = Backend.from_file(str(path))
        config_path = directory / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        return cls(backend, chat_template=config.get("chat_template") or CHAT_TEMPLATE,
                   model_max_length=int(config.get("model_max_length", 1 << 20)))

    # ---- encode / decode ----
    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def stop_ids(self) -> tuple[int, int]:
        """Ids that end generation: end of document and end of turn."""
        return (self.eos_id, self.im_end_id)

    def __len__(self) -> int:
        return self.vocab_size

    def token_bytes(self) -> list[int]:
        """UTF-8 byte length of every id (0 for special tokens): sum over targets gives bits-per-byte's
        denominator. Byte-level BPE maps each byte to one vocabulary character, so it is the token's length."""
        lengths = [0] * self.vocab_size
        for token, i in self._tok.get_vocab(with_added_tokens=True).items():
            lengths[i] = 0 if i in self.special_ids else len(token)
        return lengths

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(token_id)

    def encode(self, text: str, *, parse_special: bool = False) -> list[int]:
        """Token ids of `text` (no BOS/EOS added). Special-token strings are plain text unless `parse_special`."""
        backend = self._tok if parse_special else self._plain
        return backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str], *, parse_special: bool = False) -> list[list[int]]:
        """`encode` over many texts at once (parallel inside the tokenizers library)."""
        backend = self._tok if parse_special else self._plain
        return [e.ids for e in backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], *, skip_special: bool = False) -> str:
        """Text of `ids`; `decode(encode(s)) == s` for any string `s`."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    # ---- chat ----
    def render_text(self, messages: Sequence[dict], *, add_generation_prompt: bool = False,
                    enable_thinking: bool | None = None, continue_final_message: bool = False,
                    _spans: list | None = None) -> str:
        """The chat as text, rendered by the Jinja chat template (the same one saved for transformers).

        `continue_final_message` leaves the last (assistant) turn open so generation continues it, e.g. an
        answer after a reasoning trace cut by a thinking budget: content `"<think>\\nsteps...\\n</think>\\n"`.
        """
        _check_messages(messages)
        if continue_final_message and (add_generation_prompt or not messages
                                       or messages[-1]["role"] != "assistant"):
            raise ValueError("continue_final_message needs a final assistant message and no generation prompt")
        if continue_final_message:  # mark where the message ends, render, cut there (as transformers does)
            messages = [*messages[:-1], {**messages[-1], "content": messages[-1]["content"] + _CONTINUE_TAG}]
        if self._template is None:
            self._template = _compile_template(self.chat_template)
        extra = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
        rendered: list[str] = []
        for block in self._template.generate(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                             bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                             _spans=_spans, _rendered=rendered, **extra):
            rendered.append(block)
        text = "".join(rendered)
        if continue_final_message:
            cut = text.rfind(_CONTINUE_TAG.strip())
            if cut < 0:
                raise ValueError("continue_final_message: the template dropped the final message's content")
            text = text[:cut] if text[cut:cut + len(_CONTINUE_TAG)] == _CONTINUE_TAG else text[:cut].rstrip()
        return text

    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = False,
                            enable_thinking: bool | None = None, continue_final_message: bool = False) -> list[int]:
        """Token ids of a rendered chat. `enable_thinking` sets the default; /think and /no_think override it."""
        return self.render_chat(messages, add_generation_prompt=add_generation_prompt,
                                enable_thinking=enable_thinking, continue_final_message=continue_final_message)[0]

    def render_chat(self, messages: Sequence[dict], *, add_generation_prompt: bool = False,
                    enable_thinking: bool | None = None,
                    continue_final_message: bool = False) -> tuple[list[int], list[int]]:
        """(ids, assistant_mask): mask is 1 exactly on assistant turn tokens after the role header,
        through and including `<|im_end|>` (the tokens SFT trains on), 0 elsewhere."""
        spans: list[tuple[int, int]] = []
        text = self.render_text(messages, add_generation_prompt=add_generation_prompt,
                                enable_thinking=enable_thinking, continue_final_message=continue_final_message,
                                _spans=spans)
        encoding = self._tok.encode(text, add_special_tokens=False)
        mask = [0] * len(encoding.ids)
        span_iter = iter(sorted(spans))
        current = next(span_iter, None)
        for i, (start, end) in enumerate(encoding.offsets):
            while current is not None and start >= current[1]:
                current = next(span_iter, None)
            if current is not None and start >= current[0] and end <= current[1] and end > start:
                mask[i] = 1
        return list(encoding.ids), mask


def _nonempty(texts: Iterable[str]) -> Iterator[str]:
    for t in texts:
        if t:
            yield t


def _check_messages(messages: Sequence[dict]) -> None:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ValueError(f"messages must be a list of {{'role', 'content'}} dicts, got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content', got {m!r}")
        if not isinstance(m["role"], str) or not isinstance(m["content"], str):
            raise ValueError(f"messages[{i}]: 'role' and 'content' must be strings")
