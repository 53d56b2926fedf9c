"""An `nn.Embedding` that can be built on the meta device cheaply."""

from torch import nn


class Embedding(nn.Embedding):
    """`nn.Embedding` that skips its random initialisation on the meta device, where the values are never used
    and `normal_` would import `torch._dynamo` (about 2 s of a command's start-up)."""

    def reset_parameters(self) -> None:
        if not self.weight.is_meta:
            super().reset_parameters()
