"""The tokenizer of any model directory (any Hugging Face `tokenizer.json`), and hytron's own byte-level BPE.

`Tokenizer.load(dir)` reads what the hub's checkpoints carry: `tokenizer.json`, `tokenizer_config.json`
(special tokens, `chat_template`, `chat_control_tokens`), `chat_template.jinja` (wins over the config's
template, as in transformers), `generation_config.json` (`eos_token_id`, one id or a list). Stop ids are those
ids, the EOS token and the template's end-of-turn token (found by rendering a probe chat). `<think>`/`</think>`
are the tokenizer's own added tokens when it has them. Broken files are refused with the file and the problem.

hytron's own tokenizers (`Tokenizer.train`) are described below.

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

Tools are Nemotron 3's (XML): the `tools` are listed at the end of the system turn (a system turn of their own
when the chat has none), an assistant turn's `tool_calls` follow its answer as
`<tool_call>\n<function=NAME>\n<parameter=K>\nV\n</parameter>\n</function>\n</tool_call>` (inside the generation
span, so SFT learns them), and consecutive `tool` messages share one user turn, each in `<tool_response>`. The
server's XML tool parser reads these calls (`hytron.tokenizer.tools`).

Every assistant turn therefore begins with the special token `<think>`, so token boundaries never straddle
the role header and the content: tokenizing the rendered string (what transformers does) and our
span-tracking render give identical ids, and the assistant mask (1 on assistant content + `<|im_end|>`) is
exact. Documents for pre-training are encoded with special-token strings treated as plain text
(`encode(text)`), so a web page that contains "<s>" cannot inject a control token.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from hytron.tokenizer.sandbox import TemplateBudget, TemplateBudgetError
from hytron.tokenizer.template import CHAT_TEMPLATE, ChatTemplate, ControlTokens

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
THINK_START, THINK_END = "<think>", "</think>"
SPECIAL_TOKENS: tuple[str, ...] = (
    PAD, BOS, EOS, IM_START, IM_END, THINK_START, THINK_END,
    "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
    *(f"<|reserved_{i}|>" for i in range(5)),
)
_PROBE = "Hytron probe answer 7"  # assistant content rendered to find the template's end-of-turn token
_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
          "generation_config.json")


class Tokenizer:
    """A tokenizer with its special tokens, stop ids and chat template: hytron-trained or any HF directory."""

    def __init__(self, backend: Any, chat_template: str | None = CHAT_TEMPLATE, model_max_length: int = 1 << 20,
                 *, special_tokens: dict[str, str] | None = None, generation_eos: Sequence[int] = (),
                 control_tokens: Sequence[str] | None = None, template_origin: str = "chat template",
                 templates: dict[str, str] | None = None, files: dict[str, bytes] | None = None):
        self._tok = backend  # a `tokenizers.Tokenizer`; parses special-token strings (chat rendering)
        # a twin that treats special-token strings as plain text (documents); two objects instead of toggling
        # one flag, so concurrent encode/render calls (a server's threads) cannot see each other's mode
        self._plain = type(backend).from_str(backend.to_str())
        self._plain.encode_special_tokens = True
        backend.encode_special_tokens = False
        self.hytron_format = files is None  # trained here (or loaded from a directory hytron wrote)
        self._files = files  # a foreign directory's files, written back verbatim by `save`
        self._vocab_size: int | None = None
        self.model_max_length = model_max_length
        specials = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD} if special_tokens is None else special_tokens
        self.special_tokens_map = {k: v for k, v in specials.items() if isinstance(v, str)}
        added = backend.get_added_tokens_decoder()  # {id: AddedToken}
        self._added = {t.content: i for i, t in added.items()}
        self.special_ids = frozenset(i for i, t in added.items() if t.special)
        if self.hytron_format:
            missing = [t for t in SPECIAL_TOKENS if t not in self._added]
            if missing:
                raise ValueError(f"tokenizer is missing hytron special tokens {missing}; train it with "
                                 "Tokenizer.train")
        for name, token in self.special_tokens_map.items():
            if backend.token_to_id(token) is None:
                raise ValueError(f"{name} {token!r} is not in the tokenizer's vocabulary")
        self.bos_token, self.eos_token = specials.get("bos_token"), specials.get("eos_token")
        self.bos_id, self.eos_id = self._id(self.bos_token), self._id(self.eos_token)
        self.unk_id = self._id(specials.get("unk_token"))
        pad = self._id(specials.get("pad_token"))
        # rows are padded with this id (never trained on, never attended to by a causal model)
        self.pad_id = next(i for i in (pad, self.eos_id, 0) if i is not None)
        self.think_start_id, self.think_end_id = self._added.get(THINK_START), self._added.get(THINK_END)
        self.templates = dict(templates or ({} if chat_template is None else {"default": chat_template}))
        self._compiled = {name: ChatTemplate(src, template_origin) for name, src in self.templates.items()}
        self.chat_template = self.templates.get("default")
        if control_tokens is None:  # special tokens, plus added tokens the template writes (transformers' rule)
            text = "\0".join(t.literal_text for t in self._compiled.values())
            control_tokens = [t.content for t in added.values()
                              if t.special or (t.content in text and not t.content.isspace())]
        self._control = ControlTokens(control_tokens)
        self.template_budget = TemplateBudget()  # every render's limits (steps, seconds, size)
        self._check_template_budget()
        self.end_of_turn_id = self._find_end_of_turn()
        self.stop_ids: tuple[int, ...] = tuple(dict.fromkeys(
            int(i) for i in (*generation_eos, self.eos_id, self.end_of_turn_id) if i is not None))
        self.im_end_id = self.end_of_turn_id  # the older name
        self.post_processor_prefix = self._post_processor_prefix()

    def _id(self, token: str | None) -> int | None:
        return None if token is None else self._tok.token_to_id(token)

    def _check_template_budget(self) -> None:
        """Render probe chats (with and without tools) under the budget: a template that loops, recurses or
        builds without bound is refused here, with one line, not at the first request (or never)."""
        chat = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": _PROBE}, {"role": "user", "content": "Thanks"}]
        tool = {"type": "function", "function": {"name": "probe", "description": "a probe", "parameters": {
            "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}
        for template in self._compiled.values():
            for tools in (None, [tool]):
                try:
                    template.render(chat, tools=tools, add_generation_prompt=True, budget=self.template_budget,
                                    special_tokens=self.special_tokens_map)
                except TemplateBudgetError as e:
                    raise ValueError(f"{template.origin}: refused: {e} rendering a 4-turn probe chat") from None
                except ValueError:
                    pass  # the template refuses this probe (raise_exception, a shape it does not take): fine

    def _find_end_of_turn(self) -> int | None:
        """The control token the template writes right after an assistant answer (<|im_end|>, <SPECIAL_12>)."""
        if self.chat_template is None:
            return None
        chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _PROBE}]
        try:
            text = self.render_text(chat)
        except TemplateBudgetError:
            raise
        except ValueError:
            return None
        at = text.rfind(_PROBE)
        found = self._control.pattern.search(text, at + len(_PROBE)) if at >= 0 else None
        return None if found is None else self._added.get(found.group())

    def _post_processor_prefix(self) -> list[int]:
        """Ids the post-processor puts before a text (e.g. BOS), when it adds any."""
        with_specials = self._tok.encode("a", add_special_tokens=True).ids
        plain = self._tok.encode("a", add_special_tokens=False).ids
        for k in range(len(with_specials) - len(plain) + 1):
            if with_specials[k:k + len(plain)] == plain:
                return with_specials[:k]
        return []

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
        """Write the tokenizer files into `directory`: hytron's layout, or a loaded directory's files verbatim."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self._files is not None:
            for name, data in self._files.items():
                (directory / name).write_bytes(data)
            return directory
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
        """Load the tokenizer of a model or tokenizer directory (hytron's, or any Hugging Face layout).

        Every problem is a ValueError (or FileNotFoundError) naming the file: unreadable JSON, a tokenizer.json
        the tokenizers library rejects, a chat template with a syntax error, special tokens not in the vocab."""
        from tokenizers import Tokenizer as Backend

        directory = Path(directory)
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {directory} (train one with `hytron tokenizer train`)")
        try:
            backend = Backend.from_file(str(path))
        except Exception as e:  # the Rust library raises plain Exception for every parse problem
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ValueError(f"{path}: not a valid tokenizer.json ({reason})") from None
        config = _read_json(directory / "tokenizer_config.json")
        where = directory / "tokenizer_config.json"
        max_len = config.get("model_max_length", 1 << 20)
        if not isinstance(max_len, (int, float)) or max_len < 1:
            raise ValueError(f"{where}: model_max_length must be a positive number, got {max_len!r}")
        max_len = int(min(max_len, 1 << 40))
        if isinstance(config.get("hytron"), dict):  # a directory hytron wrote
            try:
                return cls(backend, chat_template=config.get("chat_template") or CHAT_TEMPLATE,
                           model_max_length=max_len, template_origin=f"{where} (chat_template)")
            except ValueError as e:
                raise ValueError(f"{directory}: {e}") from None
        templates, origin = _templates(directory, config)
        specials = _special_tokens(directory, config)
        generation = _read_json(directory / "generation_config.json")
        eos = generation.get("eos_token_id", _read_json(directory / "config.json", quiet=True).get("eos_token_id"))
        eos_ids = [] if eos is None else [eos] if not isinstance(eos, list) else list(eos)
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in eos_ids):
            raise ValueError(f"{directory / 'generation_config.json'}: eos_token_id must be an id or a list of "
                             f"ids, got {eos!r}")
        control = config.get("chat_control_tokens")
        if control is not None and not (isinstance(control, list) and all(isinstance(t, str) for t in control)):
            raise ValueError(f"{where}: chat_control_tokens must be a list of strings")
        if control is not None:  # transformers: special tokens plus these
            control = [t.content for t in backend.get_added_tokens_decoder().values()
                       if t.special or t.content in control]
        files = {name: (directory / name).read_bytes() for name in _FILES if (directory / name).is_file()}
        try:
            return cls(backend, None, max_len, special_tokens=specials, generation_eos=eos_ids,
                       control_tokens=control, template_origin=origin, templates=templates, files=files)
        except ValueError as e:
            raise ValueError(e if str(e).startswith(str(directory)) else f"{directory}: {e}") from None

    # ---- encode / decode ----
    @property
    def vocab_size(self) -> int:
        """One more than the largest id (added tokens included)."""
        if self._vocab_size is None:
            self._vocab_size = max(self._tok.get_vocab(with_added_tokens=True).values()) + 1
        return self._vocab_size

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def has_chat_template(self) -> bool:
        return bool(self._compiled)

    def token_bytes(self) -> list[int]:
        """UTF-8 byte length of every id (0 for special tokens): sum over targets gives bits-per-byte's
        denominator. Byte-level BPE maps each byte to one vocabulary character, so it is the token's length;
        other vocabularies are measured by decoding each id."""
        lengths = [0] * self.vocab_size
        byte_level = '"ByteLevel"' in self._tok.to_str()
        for token, i in self._tok.get_vocab(with_added_tokens=True).items():
            if i in self.special_ids:
                continue
            if token in self._added:
                lengths[i] = len(token.encode())
            elif byte_level:
                lengths[i] = len(token)
            elif token.startswith("<0x") and token.endswith(">") and len(token) == 6:  # SentencePiece byte fallback
                lengths[i] = 1
            else:
                lengths[i] = len(self._tok.decode([i], skip_special_tokens=False).encode())
        return lengths

    def backend_json(self) -> str:
        """The `tokenizers` library's JSON of this tokenizer (model, normalizer, pre-tokenizer, decoder)."""
        return self._tok.to_str()

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(token_id)

    def encode(self, text: str, *, parse_special: bool = False, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`. Special-token strings are plain text unless `parse_special`; `add_special_tokens`
        adds what the tokenizer's post-processor adds (e.g. BOS), as transformers' `tokenizer(text)` does."""
        backend = self._tok if parse_special else self._plain
        return _encode(backend, text, add_special_tokens)

    def encode_batch(self, texts: Sequence[str], *, parse_special: bool = False) -> list[list[int]]:
        """`encode` over many texts at once (parallel inside the tokenizers library)."""
        backend = self._tok if parse_special else self._plain
        return [e.ids for e in backend.encode_batch(list(texts), add_special_tokens=False)]

    def document_prefix(self) -> list[int]:
        """Ids a document starts with: the post-processor's (e.g. BOS) if it adds any, else BOS, else EOS (the
        separator of GPT-2-style tokenizers without BOS): scoring needs one token of context."""
        if self.post_processor_prefix:
            return list(self.post_processor_prefix)
        return [i for i in (self.bos_id if self.bos_id is not None else self.eos_id,) if i is not None]

    def _encode_without_added_tokens(self, text: str) -> list[int]:
        """The tokenizer's normalizer, pre-tokenizer and model only: no added token is matched, special or not."""
        tok = self._tok
        if tok.normalizer is not None:
            text = tok.normalizer.normalize_str(text)
        splits = [s for s, _ in tok.pre_tokenizer.pre_tokenize_str(text)] if tok.pre_tokenizer is not None else [text]
        return [t.id for s in splits for t in tok.model.tokenize(s)]

    def decode(self, ids: Iterable[int], *, skip_special: bool = False) -> str:
        """Text of `ids`; `decode(encode(s)) == s` for any string `s`."""
        ids = [int(i) for i in ids]
        if len(ids) > 4096:  # the batch call releases the GIL (decode holds it): a server keeps answering
            return self._tok.decode_batch([ids], skip_special_tokens=skip_special)[0]
        return self._tok.decode(ids, skip_special_tokens=skip_special)

    # ---- chat ----
    def _template_for(self, tools) -> ChatTemplate:
        if not self._compiled:
            raise ValueError("this model has no chat template (no chat_template.jinja and none in "
                             "tokenizer_config.json): use the completions API with a raw prompt")
        if tools and "tool_use" in self._compiled:
            return self._compiled["tool_use"]
        return self._compiled.get("default") or next(iter(self._compiled.values()))

    def render_text(self, messages: Sequence[dict], *, add_generation_prompt: bool = False,
                    enable_thinking: bool | None = None, continue_final_message: bool = False,
                    tools: list | None = None, sanitize: bool = False, _spans: list | None = None,
                    _cancel: threading.Event | None = None, **template_kwargs) -> str:
        """The chat as text, rendered by the checkpoint's Jinja chat template as transformers renders it.

        `enable_thinking` and other keywords are template variables (vLLM's `chat_template_kwargs`); `tools`
        are JSON schemas. `continue_final_message` leaves the last turn open so generation continues it (e.g. an
        answer after a reasoning trace cut by a thinking budget). `sanitize` marks control tokens in the input
        so `render_chat` encodes them as text (see `hytron.tokenizer.template`). Rendering stays within
        `self.template_budget` and stops soon after `_cancel` is set (a server's request went away).
        """
        if enable_thinking is not None:
            template_kwargs["enable_thinking"] = enable_thinking
        return self._template_for(tools).render(
            messages, tools=tools, add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message, special_tokens=self.special_tokens_map,
            variables=template_kwargs,
            mark=self._control.mark if sanitize else None, spans=_spans, budget=self.template_budget,
            cancel=_cancel)

    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = False,
                            enable_thinking: bool | None = None, continue_final_message: bool = False,
                            tools: list | None = None, sanitize: bool = False,
                            _cancel: threading.Event | None = None, **template_kwargs) -> list[int]:
        """Token ids of a rendered chat (transformers' `apply_chat_template(..., tokenize=True)`); with
        `sanitize`, control-token strings inside messages are encoded as text (what the server does)."""
        text = self.render_text(messages, add_generation_prompt=add_generation_prompt,
                                enable_thinking=enable_thinking, continue_final_message=continue_final_message,
                                tools=tools, sanitize=sanitize, _cancel=_cancel, **template_kwargs)
        if sanitize:
            return self._control.encode(text, lambda s: _encode(self._tok, s), self._encode_without_added_tokens,
                                        self._tok.token_to_id)
        return _encode(self._tok, text)

    def render_chat(self, messages: Sequence[dict], *, add_generation_prompt: bool = False,
                    enable_thinking: bool | None = None, continue_final_message: bool = False,
                    tools: list | None = None, **template_kwargs) -> tuple[list[int], list[int]]:
        """(ids, assistant_mask): mask is 1 exactly on what the assistant turns produce (content, reasoning,
        tool calls, the end-of-turn token), 0 elsewhere: the tokens SFT trains on.

        A template with `{% generation %}` marks (hytron's) gives the spans directly. Any other template: turn
        i's span starts where the chat rendered up to turn i with a generation prompt stops agreeing with the
        whole chat, and ends after the next end-of-turn token. A turn the template rewrites once later turns
        exist (e.g. Nemotron 3 drops the reasoning of earlier turns) is trained as rendered in the whole chat."""
        kw = dict(enable_thinking=enable_thinking, tools=tools, **template_kwargs)
        spans: list[tuple[int, int]] = []
        text = self.render_text(messages, add_generation_prompt=add_generation_prompt,
                                continue_final_message=continue_final_message, _spans=spans, **kw)
        if not spans:
            spans = self._assistant_spans(messages, text, kw)
        encoding = self._tok.encode(text, add_special_tokens=False)
        mask = [0] * len(encoding.ids)
        span_iter = iter(sorted(spans))
        current = next(span_iter, None)
        for i, (start, end) in enumerate(encoding.offsets):  # a token overlapping a span is in (as transformers)
            while current is not None and start >= current[1]:
                current = next(span_iter, None)
            if current is None:
                break
            if end > current[0] and end > start:
                mask[i] = 1
        return list(encoding.ids), mask

    def _assistant_spans(self, messages: Sequence[dict], text: str, kw: dict) -> list[tuple[int, int]]:
        if not any(m.get("role") == "assistant" for m in messages):
            return []
        if self.end_of_turn_id is None:
            raise ValueError("cannot mask assistant turns: the chat template has no end-of-turn token after an "
                             "assistant answer (add {% generation %} marks to the template)")
        eot = self.id_to_token(self.end_of_turn_id)
        spans = []
        for i, m in enumerate(messages):
            if m.get("role") != "assistant":
                continue
            before = self.render_text(messages[:i], add_generation_prompt=True, **kw) if i else ""
            start = 0
            while start < min(len(before), len(text)) and before[start] == text[start]:
                start += 1
            end = text.find(eot, start)
            if end < 0:
                raise ValueError(f"cannot mask assistant turn {i}: no {eot} after it in the rendered chat")
            spans.append((start, end + len(eot)))
        return spans


def _read_json(path: Path, quiet: bool = False) -> dict:
    """A JSON object from `path` ({} if absent); a broken file is a ValueError naming it (unless `quiet`)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        if quiet:
            return {}
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        if quiet:
            return {}
        raise ValueError(f"{path}: must hold a JSON object, got {type(data).__name__}")
    return data


def _templates(directory: Path, config: dict) -> tuple[dict[str, str], str]:
    """The chat templates by name and where they came from: chat_template.jinja wins over the config's."""
    where = directory / "tokenizer_config.json"
    file = directory / "chat_template.jinja"
    if file.is_file():
        try:
            return {"default": file.read_text(encoding="utf-8")}, str(file)
        except UnicodeDecodeError as e:
            raise ValueError(f"{file}: not UTF-8 text ({e})") from None
    raw = config.get("chat_template")
    if raw is None:
        return {}, str(where)
    if isinstance(raw, str):
        return {"default": raw}, f"{where} (chat_template)"
    if isinstance(raw, list) and all(isinstance(t, dict) and isinstance(t.get("name"), str)
                                     and isinstance(t.get("template"), str) for t in raw):
        return {t["name"]: t["template"] for t in raw}, f"{where} (chat_template)"
    raise ValueError(f"{where}: chat_template must be a string or a list of {{name, template}}")


def _special_tokens(directory: Path, config: dict) -> dict[str, str]:
    """bos/eos/pad/unk token strings from tokenizer_config.json (else special_tokens_map.json)."""
    fallback = _read_json(directory / "special_tokens_map.json")
    out = {}
    for name in ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"):
        value = config.get(name, fallback.get(name))
        if isinstance(value, dict):  # a serialised AddedToken
            value = value.get("content")
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{directory / 'tokenizer_config.json'}: {name} must be a string, got {value!r}")
        if value is not None:
            out[name] = value
    return out


def _nonempty(texts: Iterable[str]) -> Iterator[str]:
    for t in texts:
        if t:
            yield t


def _encode(backend, text: str, add_special_tokens: bool = False) -> list[int]:
    """`backend.encode(text).ids` through the batch call, which releases the GIL while it works (encode holds
    it): a server's event loop keeps answering while a 4 MB prompt is tokenized in a worker thread."""
    return backend.encode_batch([text], add_special_tokens=add_special_tokens)[0].ids
