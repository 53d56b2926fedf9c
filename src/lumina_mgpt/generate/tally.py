"""Where each row of a decode call stands, as device tensors that every step strategy (one token, or a
speculative window) moves on in place: its new tokens, how many it keeps, whether it is done, its budget and
the forwards it took part in."""

from dataclasses import dataclass

import torch


@dataclass
class Tally:
    """Per-row progress of one generate call (all `[B]` but `out`)."""

    out: torch.Tensor  # [B, max_new_tokens + slack]: row b's new tokens are out[b, :kept[b]]
    kept: torch.Tensor  # new tokens so far, the stop token included
    done: torch.Tensor  # bool: the row stopped or spent its budget
    budget: torch.Tensor  # the row's most new tokens
    forwards: torch.Tensor  # forwards the row took part in while unfinished

    @classmethod
    def start(cls, budgets: list[int], width: int, device: torch.device) -> "Tally":
        """An empty tally; `width`: the output slots per row (the budget and a step's most tokens)."""
        batch = len(budgets)
        zeros = torch.zeros(batch, dtype=torch.long, device=device)
        return cls(
            out=torch.zeros(batch, width, dtype=torch.long, device=device),
            kept=zeros.clone(),
            done=torch.zeros(batch, dtype=torch.bool, device=device),
            budget=torch.tensor(budgets, dtype=torch.long, device=device),
            forwards=zeros,
        )

    def reached(self) -> tuple[int, bool]:
        """`(index, finished)`: how many token indices every unfinished row has reached (once all rows are
        done, the longest row's count), and whether all rows are done. One host sync."""
        finished = self.done.all()
        unfinished = self.kept.masked_fill(self.done, self.out.shape[1]).min()
        index = torch.where(finished, self.kept.max(), unfinished)
        index, finished = torch.stack([index, finished.long()]).tolist()
        return index, bool(finished)

    def tokens(self) -> list[list[int]]:
        """Each row's new tokens, up to and including its stop token."""
        return [row[:n].tolist() for row, n in zip(self.out, self.kept.tolist(), strict=True)]
