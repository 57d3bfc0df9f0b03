"""A Hugging Face `tokenizer.json` (byte-level BPE) as llama.cpp's GGUF tokenizer keys.

llama.cpp re-implements pre-tokenization by name (`tokenizer.ggml.pre`), so the type must be the one that
splits text exactly as the tokenizer does. hytron's tokenizer is `ByteLevel(use_regex=True)`, i.e. GPT-2's
regex, which llama.cpp calls `gpt-2`; a tokenizer whose pre-tokenization matches no type we know is refused
instead of written with a guess (it would load and then tokenize differently).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hytron.config import read_json_file
from hytron.tokenizer import Tokenizer

# GPT-2's pre-tokenizer regex (what `tokenizers`' ByteLevel(use_regex=True) uses); llama.cpp type "gpt-2"
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# The chat template's `{% generation %}` marks the assistant mask for training; runtimes do not know the tag
# (llama-cpp-python renders with plain Jinja2, llama.cpp with its own engine) and it renders nothing itself.
_TRAINING_ONLY_TAGS = ("{%- generation -%}", "{%- endgeneration -%}", "{% generation %}", "{% endgeneration %}")

NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5  # gguf.TokenType values, kept here to avoid the import


@dataclass
class GGUFVocab:
    """What the GGUF file says about the tokenizer; `write(writer)` adds it to a `gguf.GGUFWriter`."""

    pre: str
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_id: int | None
    eos_id: int | None
    eot_id: int | None
    pad_id: int | None
    add_bos: bool
    chat_template: str | None

    def write(self, writer) -> None:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.token_types)
        writer.add_token_merges(self.merges)
        for add, value in ((writer.add_bos_token_id, self.bos_id), (writer.add_eos_token_id, self.eos_id),
                           (writer.add_eot_token_id, self.eot_id), (writer.add_pad_token_id, self.pad_id)):
            if value is not None:
                add(value)
        writer.add_add_bos_token(self.add_bos)  # hytron's: False (its chat template writes BOS itself)
        writer.add_add_eos_token(False)
        if self.chat_template:
            writer.add_chat_template(self.chat_template)


def _pre_type(pre: dict | None, source: str) -> str:
    """llama.cpp's pre-tokenizer type that splits text exactly as `pre` does, or a ValueError saying why not."""
    def byte_level(p: dict, regex: bool) -> bool:
        return (p.get("type") == "ByteLevel" and not p.get("add_prefix_space", False)
                and bool(p.get("use_regex", True)) == regex)

    if pre and byte_level(pre, regex=True):
        return "gpt-2"
    if pre and pre.get("type") == "Sequence":
        steps = pre.get("pretokenizers") or []
        if (len(steps) == 2 and steps[0].get("type") == "Split" and byte_level(steps[1], regex=False)
                and steps[0].get("pattern", {}).get("Regex") == GPT2_REGEX
                and steps[0].get("behavior") == "Isolated" and not steps[0].get("invert", False)):
            return "gpt-2"
    kind = json.dumps(pre)[:120] if pre else "none"
    raise ValueError(f"{source}: pre_tokenizer {kind} matches no llama.cpp pre-tokenizer type that hytron can "
                     "vouch for (known: ByteLevel with GPT-2's regex -> 'gpt-2'); refusing to write a GGUF "
                     "that would tokenize differently")


def _strip_training_tags(text: str | None) -> str | None:
    if not text:
        return None
    for tag in _TRAINING_ONLY_TAGS:
        text = text.replace(tag, "")
    return text


def read_vocab(directory: str | Path, vocab_size: int) -> GGUFVocab:
    """The tokenizer of a model directory as GGUF keys, padded with unused tokens to the model's `vocab_size`."""
    directory = Path(directory)
    path = directory / "tokenizer.json"
    data = read_json_file(path, f"{directory}: no tokenizer.json; a GGUF file needs the model's tokenizer")
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise ValueError(f"{path}: model type {model.get('type')!r}; hytron exports byte-level BPE tokenizers only")
    if data.get("normalizer") is not None:
        raise ValueError(f"{path}: has a normalizer ({data['normalizer'].get('type')}); llama.cpp's gpt2 "
                         "tokenizer applies none, so token ids would differ")
    for field in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(field):
            raise ValueError(f"{path}: model.{field}={model[field]!r} is not supported by llama.cpp's BPE")
    if model.get("byte_fallback"):
        raise ValueError(f"{path}: model.byte_fallback is set; that is a SentencePiece-style BPE, not byte-level")
    pre = _pre_type(data.get("pre_tokenizer"), str(path))

    by_id: dict[int, str] = {int(i): tok for tok, i in model.get("vocab", {}).items()}
    types: dict[int, int] = dict.fromkeys(by_id, NORMAL)
    for added in data.get("added_tokens") or []:
        i = int(added["id"])
        by_id[i] = added["content"]
        types[i] = CONTROL if added.get("special") else USER_DEFINED
    if by_id and max(by_id) >= vocab_size:
        raise ValueError(f"{path}: token id {max(by_id)} does not fit the model's vocab_size {vocab_size}")
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(vocab_size)]
    token_types = [types.get(i, UNUSED) for i in range(vocab_size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]

    # special ids, end of turn and chat template as hytron reads them (its own or any Hugging Face layout)
    tok = Tokenizer.load(directory)
    pad = tok.special_tokens_map.get("pad_token")
    return GGUFVocab(pre=pre, tokens=tokens, token_types=token_types, merges=merges, bos_id=tok.bos_id,
                     eos_id=tok.eos_id, eot_id=tok.end_of_turn_id, pad_id=None if pad is None else tok.pad_id,
                     add_bos=bool(tok.post_processor_prefix) and tok.post_processor_prefix == [tok.bos_id],
                     chat_template=_strip_training_tags(tok.chat_template))
