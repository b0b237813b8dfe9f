"""Multi-layer perceptron (box head, query position head) and the transformer feed-forward block.

Submodule names follow detrex (`layers.i` / `layers.0.0`, `layers.1`) so its state dicts load."""
from typing import Optional

import torch
from torch import nn

__all__ = ["MLP", "FFN"]


class MLP(nn.Module):
    """`num_layers` linear layers with ReLU between them (none after the last).

    Args:
        input_dim, hidden_dim, output_dim: feature sizes.
        num_layers: number of linear layers (>= 1).
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"MLP needs at least one layer, got num_layers={num_layers}")
        self.num_layers = num_layers
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., input_dim) -> (..., output_dim)."""
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)


class FFN(nn.Module):
    """Transformer feed-forward block with residual: x + drop(W2 drop(act(W1 x))).

    Args:
        embed_dim: input and output channels. Default 256.
        feedforward_dim: hidden channels. Default 2048.
        dropout: dropout after the activation and after the output projection. Default 0.0.
        activation: module applied after the first projection. Default ReLU.
    """

    def __init__(self, embed_dim: int = 256, feedforward_dim: int = 2048, dropout: float = 0.0,
                 activation: Optional[nn.Module] = None):
        super().__init__()
        self.embed_dim = embed_dim
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dim, feedforward_dim),
                          activation if activation is not None else nn.ReLU(),
                          nn.Dropout(dropout)),
            nn.Linear(feedforward_dim, embed_dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor, identity: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (..., embed_dim); identity: residual, defaults to x."""
        return (x if identity is None else identity) + self.layers(x)
