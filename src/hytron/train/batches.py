"""Batches of chat examples for every loop that trains on them (SFT, tuning): padded, masked, resumable.

An example is `(ids, loss_mask)` from `hytron.data.chat.encode_row`; the loss counts only masked target
positions (assistant tokens). Rows are never packed together, so no Mamba state or attention crosses from
one conversation to the next.
"""

from __future__ import annotations

import torch

from hytron.data.chat import encode_row
from hytron.train import distributed as dist
from hytron.train.loop import next_token_losses


class ChatBatches:
    """Encoded rows in seeded shuffled order, one epoch after another; resumable via state_dict.

    A batch is right-padded to its longest row: (inputs (B, L-1), targets (B, L-1), loss_mask (B, L-1)).
    Rows are never packed together, so no Mamba state or attention crosses from one conversation to the next.
    """

    def __init__(self, examples: list[tuple[list[int], list[int]]], batch_size: int, seed: int, pad_id: int,
                 rank: int = 0, world_size: int = 1):
        self.examples = examples[rank::world_size]
        if len(self.examples) < 1:
            raise ValueError("no SFT rows left for this rank (fewer rows than processes?)")
        self.batch_size, self.seed, self.pad_id = batch_size, seed, pad_id
        self.epoch, self.pos = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(len(self.examples), generator=g).tolist()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._order = self._permutation()

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        picked = []
        while len(picked) < self.batch_size:
            if self.pos >= len(self._order):
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._permutation()
            picked.append(self.examples[self._order[self.pos]])
            self.pos += 1
        return collate(picked, self.pad_id)


def collate(examples, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (inputs, targets, loss_mask), each (B, L-1); mask[t] says whether targets[t] is trained."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.bool)
    for i, (x, m) in enumerate(examples):
        ids[i, :len(x)] = torch.tensor(x)
        mask[i, :len(m)] = torch.tensor(m, dtype=torch.bool)
    return ids[:, :-1], ids[:, 1:], mask[:, 1:]


def masked_loss_sum(model, inputs, targets, mask, amp=None) -> torch.Tensor:
    """Sum of cross-entropy over masked target positions (divide by the step's mask count)."""
    return masked_losses(model, inputs, targets, mask, amp)[0]


def masked_losses(model, inputs, targets, mask, amp=None, mtp_depths: int = 0,
                  mtp_loss_scale: float = 0.3) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Pre-training's objective (`next_token_losses`) summed over masked target positions only: (sum to
    backpropagate, {"loss": next-token sum, "mtp_loss_k": depth k's sum}). With `mtp_depths` D the model's MTP
    head trains too: depth k's logit at t predicts target t+k, counted where mask[t+k] is (an assistant token)."""
    with torch.autocast(inputs.device.type, dtype=amp, enabled=amp is not None):
        out = model(inputs, mtp_depths=mtp_depths) if mtp_depths else model(inputs)  # (B, L, V)[, MTP logits]
    return next_token_losses(out, targets.masked_fill(~mask.bool(), -100), mtp_loss_scale, reduction="sum")


def encode_rows(tokenizer, rows: list[dict], seq_len: int) -> tuple[list, int]:
    """(examples, dropped): encoded rows that fit in `seq_len` and train on at least one token."""
    examples, dropped = [], 0
    for row in rows:
        ids, mask = encode_row(tokenizer, row)
        if len(ids) > seq_len or not any(mask[1:]):
            dropped += 1
            continue
        examples.append((ids, mask))
    return examples, dropped


@torch.no_grad()
def evaluate_masked(model, examples, batch_size: int, pad_id: int, info: dist.DistInfo, amp=None) -> dict:
    """Mean loss over the masked (assistant) tokens of `examples`, the batches shared out over the ranks.

    Every rank must call it: under FSDP the forward is collective, so each rank runs the same number of
    forwards (a rank short of a batch scores a copy of the first with its mask cleared)."""
    if not examples:
        return {}
    was = model.training
    model.eval()
    batches = [examples[i:i + batch_size] for i in range(0, len(examples), batch_size)]
    per_rank = -(-len(batches) // info.world_size)
    total = torch.zeros(2, dtype=torch.float64)  # [sum of token losses, tokens]
    for k in range(per_rank):
        i = k * info.world_size + info.rank
        x, y, m = (t.to(info.device) for t in collate(batches[i] if i < len(batches) else batches[0], pad_id))
        if i >= len(batches):
            m = torch.zeros_like(m)
        total += torch.stack([masked_loss_sum(model, x, y, m, amp).double().cpu(), m.sum().double().cpu()])
    total = dist.all_reduce_sum(total.to(info.device)).cpu()
    model.train(was)
    return {"val_loss": float(total[0] / total[1].clamp(min=1)), "val_tokens": int(total[1])}
