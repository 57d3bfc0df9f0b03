"""GGUF files from `hytron export gguf` run in llama.cpp (through llama-cpp-python) exactly as in hytron.

On the quickstart's shape (hytron-small, dense), a tiny MoE and a tiny LatentMoE (Nemotron 3 Super's experts):
the same token ids for varied strings, the same logits at every prompt position (f32), the same greedy
continuation, q8_0 within a stated top-1 agreement, and chat through the chat template stored in the file.
"""

import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from hytron.export.gguf_model import export_gguf
from hytron.infer.engine import generate
from hytron.infer.sampling import SamplingParams
from hytron.model import HybridLM
from hytron.tokenizer import Tokenizer

STRINGS = [
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure you're right; they'll say it's what we'd've done.",
    "Grüße aus Köln — naïve café, 東京タワー, Ελληνικά, emoji 🚀🧪 and ligature ﬁ.",
    "def f(x):\n    return {'a': [1, 2, 3], \"b\": x ** 2}  # comment\n",
    "a  b   c\t\t d\n\n\n  e    \n \u00a0 \u3000end",
    "3.14159 2026-12-01 1234567890 0x1F $5.00 100%",
]
N_NEW = 40  # greedy tokens compared (the issue asks for at least 32)
Q8_MIN_TOP1 = 0.90  # q8_0 vs hytron f32, share of positions with the same argmax (measured 0.96 dense, 0.95 MoE)


def _prose(n_chars: int = 1500) -> str:
    """Text the tokenizer was not trained on: the start of the standard library's `email` package docs."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    return (lib / "email" / "message.py").read_text(encoding="utf-8")[:n_chars]


def _llama(llama_cpp, path: Path):
    return llama_cpp.Llama(model_path=str(path), n_ctx=1024, n_batch=1024, n_threads=2, logits_all=True,
                           verbose=False, seed=0)


def _llama_logits(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def _llama_greedy(llm, ids: list[int], n: int) -> list[int]:
    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(n):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(nxt)
        llm.eval([nxt])
    return out


def _hytron_greedy(model, ids: list[int], n: int) -> list[int]:
    params = SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)
    return generate(model, [ids], params)[0].token_ids


@pytest.fixture(scope="module", params=["dense", "moe", "latent_moe"])
def exported(request, llama_cpp, tmp_path_factory):
    model_dir = request.getfixturevalue(f"{request.param}_dir")
    out = tmp_path_factory.mktemp(f"gguf-{request.param}")
    f32 = export_gguf(model_dir, out / "model-f32.gguf", "f32")
    q8 = export_gguf(model_dir, out / "model-q8_0.gguf", "q8_0")
    model = HybridLM.from_pretrained(model_dir).eval()
    files = {"tok": Tokenizer.load(model_dir), "model": model, "f32": _llama(llama_cpp, f32),
             "q8": _llama(llama_cpp, q8)}
    yield files
    files["f32"].close()
    files["q8"].close()


def _chat_text(tok: Tokenizer) -> str:
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Name a prime. /no_think"},
                {"role": "assistant", "content": "<think>\nsmall one\n</think>\n7"},
                {"role": "user", "content": "Another, with   spaces\tand tabs?"}]
    return tok.render_text(messages, add_generation_prompt=True)


def test_token_ids_identical(exported):
    tok, llm = exported["tok"], exported["f32"]
    for text in [*STRINGS, _prose()]:
        want = tok.encode(text)
        got = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        assert got == want, f"tokenization differs for {text[:40]!r}"
        assert llm.detokenize(got).decode("utf-8") == text
    chat = _chat_text(tok)
    assert llm.tokenize(chat.encode("utf-8"), add_bos=False, special=True) == tok.encode(chat, parse_special=True)


def test_f32_logits_and_greedy_continuation_identical(exported):
    tok, model, llm = exported["tok"], exported["model"], exported["f32"]
    for text in (STRINGS[0], _chat_text(tok)):
        ids = tok.encode(text, parse_special=True)
        with torch.no_grad():
            want = model(torch.tensor([ids]))[0].float().numpy()
        got = _llama_logits(llm, ids)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-3 * max(1.0, np.abs(want).max()), text[:40]
        assert _llama_greedy(llm, ids, N_NEW) == _hytron_greedy(model, ids, N_NEW), text[:40]


def test_q8_0_top1_agreement(exported):
    tok, model = exported["tok"], exported["model"]
    ids = tok.encode(_prose())[:400]
    with torch.no_grad():
        want = model(torch.tensor([ids]))[0].argmax(-1).numpy()
    got = _llama_logits(exported["q8"], ids).argmax(-1)
    agreement = float((got == want).mean())
    assert agreement >= Q8_MIN_TOP1, f"q8_0 top-1 agreement {agreement:.3f} < {Q8_MIN_TOP1}"


@pytest.mark.parametrize("thinking", [True, False])
def test_chat_through_the_files_template(exported, llama_cpp, thinking):
    tok, model, llm = exported["tok"], exported["model"], exported["f32"]
    messages = [{"role": "user", "content": "Write one word." + ("" if thinking else " /no_think")}]
    # llama-cpp-python renders the template stored in the GGUF exactly as hytron does
    template = llm.metadata["tokenizer.chat_template"]
    formatter = llama_cpp.llama_chat_format.Jinja2ChatFormatter(template=template, eos_token="</s>",
                                                                 bos_token="<s>")
    prompt = tok.render_text(messages, add_generation_prompt=True)
    assert formatter(messages=messages).prompt == prompt
    assert prompt.endswith("<think>\n" if thinking else "<think></think>")
    # and its chat completion (greedy, stops at <|im_end|> or </s>) is made of hytron's greedy tokens
    llm.reset()
    reply = llm.create_chat_completion(messages=messages, max_tokens=24, temperature=0.0)
    n = reply["usage"]["completion_tokens"]  # llama-cpp-python may take one more to finish a UTF-8 character
    ids = tok.encode(prompt, parse_special=True)
    done = generate(model, [ids], SamplingParams(max_tokens=n, temperature=0.0), stop_ids=tok.stop_ids)[0]
    answer = [i for i in done.token_ids if i not in tok.stop_ids]
    # its text leaves out control tokens (<think>, </think>) and bytes that are not valid UTF-8
    want = tok.decode(answer, skip_special=True).replace("\ufffd", "")
    assert reply["choices"][0]["message"]["content"] == want
    assert reply["choices"][0]["finish_reason"] == ("stop" if done.finish_reason == "stop" else "length")
