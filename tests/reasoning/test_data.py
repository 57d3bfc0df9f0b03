"""SFT rows: the loss mask covers exactly the assistant tokens; reasoning on/off per row; JSONL errors name the line."""

import json

import pytest
import torch
import torch.nn.functional as F

from hytron.data.chat import encode_row, normalise_row, read_chat_jsonl
from hytron.data.io import write_jsonl
from hytron.reasoning.data import sft_rows
from hytron.reasoning.tasks import generate_problems
from hytron.train.batches import collate, masked_loss_sum
from tests.conftest import tiny_model


def split_by_mask(tok, ids, mask):
    """(trained text, untrained text), each the concatenation of its maximal runs."""
    on = tok.decode([i for i, m in zip(ids, mask) if m])
    off = tok.decode([i for i, m in zip(ids, mask) if not m])
    return on, off


def test_mask_is_exactly_the_assistant_turn_with_reasoning(tok, rows):
    row = next(r for r in rows if r["reasoning"] == "on")
    user, reply = row["messages"]
    ids, mask = encode_row(tok, row)
    on, off = split_by_mask(tok, ids, mask)
    assert on == f"<think>\n{reply['reasoning_content']}\n</think>\n{reply['content']}<|im_end|>"
    assert off == f"<s><|im_start|>user\n{user['content']}<|im_end|>\n<|im_start|>assistant\n\n"
    # one contiguous run, ending on <|im_end|>
    first, last = mask.index(1), len(mask) - 1 - mask[::-1].index(1)
    assert all(mask[first:last + 1]) and ids[last] == tok.im_end_id


def test_reasoning_off_rows_train_the_empty_think_and_drop_any_trace(tok, rows):
    row = next(r for r in rows if r["reasoning"] == "off")
    assert "/no_think" in row["messages"][0]["content"]
    ids, mask = encode_row(tok, row)
    on, off = split_by_mask(tok, ids, mask)
    assert on == f"<think></think>{row['messages'][1]['content']}<|im_end|>"
    assert "/no_think" not in off  # the template strips the flag; the pre-filled empty think carries it
    with_trace = {**row, "messages": [row["messages"][0], {**row["messages"][1], "reasoning_content": "x = 1"}]}
    assert encode_row(tok, with_trace) == (ids, mask)


def test_multi_turn_masks_every_assistant_turn_and_no_user_or_system_token(tok):
    row = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Compute 1 + 1."},
                        {"role": "assistant", "content": "The answer is 2."},
                        {"role": "user", "content": "Compute 2 + 2."},
                        {"role": "assistant", "content": "The answer is 4.", "reasoning_content": "2 + 2 = 4"}]}
    ids, mask = encode_row(tok, row)
    on, off = split_by_mask(tok, ids, mask)
    assert on == ("<think></think>The answer is 2.<|im_end|>"
                  "<think>\n2 + 2 = 4\n</think>\nThe answer is 4.<|im_end|>")
    for text in ("Be brief.", "Compute 1 + 1.", "Compute 2 + 2.", "system", "user", "assistant"):
        assert text in off and text not in on


def test_sft_loss_is_cross_entropy_over_masked_targets_only(tok, rows):
    examples = [encode_row(tok, r) for r in rows[:4]]
    x, y, m = collate(examples, tok.pad_id)
    model = tiny_model(vocab_size=tok.vocab_size)
    got = masked_loss_sum(model, x, y, m)
    logits = model(x)
    want = sum(F.cross_entropy(logits[b, t], y[b, t], reduction="sum")
               for b in range(x.shape[0]) for t in range(x.shape[1]) if m[b, t])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    # the user turn's targets do not matter: change them and the loss stays
    y2 = y.clone()
    y2[~m] = (y2[~m] + 1) % tok.vocab_size
    torch.testing.assert_close(masked_loss_sum(model, x, y2, m), got)
    assert m.sum() == sum(sum(mk[1:]) for _, mk in examples)


def test_row_shares_and_determinism():
    problems = generate_problems("arithmetic", 400, seed=1)
    a = sft_rows(problems, "verbose", seed=2, off_share=0.25, truncated_share=0.25)
    assert a == sft_rows(problems, "verbose", seed=2, off_share=0.25, truncated_share=0.25)
    off = sum(r["reasoning"] == "off" for r in a) / len(a)
    assert 0.18 < off < 0.32
    concise = sft_rows(problems, "concise", seed=2, off_share=0.0, truncated_share=0.0)
    assert all(r["messages"][1]["reasoning_content"].count("\n") == len(p.steps) - 1
               for r, p in zip(concise, problems))
    with pytest.raises(ValueError, match="off_share"):
        sft_rows(problems, off_share=1.5)


def test_user_jsonl_roundtrip_and_errors_name_the_line(tmp_path, rows):
    path = write_jsonl(rows[:5], tmp_path / "rows.jsonl")
    assert read_chat_jsonl(path) == [normalise_row(r) for r in rows[:5]]
    bad = tmp_path / "bad.jsonl"
    good = json.dumps(rows[0])
    bad.write_text(good + "\n" + json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: .*assistant"):
        read_chat_jsonl(bad)
    bad.write_text(good + "\n" + json.dumps({**rows[0], "reasoning": "maybe"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: 'reasoning'"):
        read_chat_jsonl(bad)
    # no 'reasoning' field: inferred from the assistant turn
    inline = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>a</think>b"}]}
    assert normalise_row(inline)["reasoning"] == "on"


def test_cli_reasoning_data_writes_rows_and_verbs_are_discovered(tmp_path, capsys):
    from hytron.cli import build_parser, main

    out = tmp_path / "rows.jsonl"
    assert main(["reasoning-data", "--out", str(out), "--n", "30", "--kinds", "arithmetic,ordering",
                 "--off-share", "0.2"]) == 0
    rows = read_chat_jsonl(out)
    assert len(rows) == 30 and {r["kind"] for r in rows} == {"arithmetic", "ordering"}
    assert json.loads(capsys.readouterr().out)["rows"] == 30
    verbs = build_parser()._subparsers._group_actions[0].choices
    assert {"sft", "rl", "reasoning-data", "reasoning-distill"} <= set(verbs)
    assert main(["reasoning-data", "--out", str(out), "--kinds", "sudoku"]) == 2  # one clear error line
    assert "unknown problem kind" in capsys.readouterr().err
