"""Multi-layer perceptron (box head, query position head) and the transformer feed-forward block.

Submodule names follow detrex (`layers.i` / `layers.0.0`, `layers.1`) so its state dicts load."""

from typing import Optional

import torch
from torch import nn

from .graph_capture import capturing_graph

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

    At inference (eval mode, no autograd) the tokens go through in chunks of `inference_chunk`
    rows: each row's result is the same, but the (rows, feedforward_dim) hidden activations never
    exist at once. On CPU a full-size hidden tensor (165 MB for DINO-R50's 20k tokens) is a fresh
    memory mapping every time (page faults, ~0.4 ms/MB here) and does not fit the cache; a chunk
    is reused from the heap and stays in the cache.

    Args:
        embed_dim: input and output channels. Default 256.
        feedforward_dim: hidden channels. Default 2048.
        dropout: dropout after the activation and after the output projection. Default 0.0.
        activation: module applied after the first projection. Default in-place ReLU.
        inference_chunk: rows per chunk at inference; 0 disables chunking. Default 1024.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        feedforward_dim: int = 2048,
        dropout: float = 0.0,
        activation: Optional[nn.Module] = None,
        inference_chunk: int = 1024,
    ):
        super().__init__()
        if inference_chunk < 0:
            raise ValueError(f"inference_chunk must be >= 0, got {inference_chunk}")
        self.embed_dim = embed_dim
        self.inference_chunk = inference_chunk
        self.layers = nn.Sequential(
            nn.Sequential(
                nn.Linear(embed_dim, feedforward_dim),
                activation if activation is not None else nn.ReLU(inplace=True),
                nn.Dropout(dropout),
            ),
            nn.Linear(feedforward_dim, embed_dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor, identity: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (..., embed_dim); identity: residual, defaults to x."""
        identity = x if identity is None else identity
        rows = x.numel() // max(x.shape[-1], 1)
        chunk = self.inference_chunk
        # a trace (ONNX export) records no writes through `out=`: one product there
        if (
            self.training
            or torch.is_grad_enabled()
            or chunk == 0
            or rows <= chunk
            or capturing_graph()
        ):
            return identity + self.layers(x)
        flat = x.reshape(rows, x.shape[-1])
        residual = identity.expand_as(x).reshape(rows, x.shape[-1])
        out = torch.empty_like(residual)
        for start in range(0, rows, chunk):
            end = min(start + chunk, rows)
            torch.add(residual[start:end], self.layers(flat[start:end]), out=out[start:end])
        return out.view(x.shape)
