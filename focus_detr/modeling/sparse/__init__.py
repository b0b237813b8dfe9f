"""Sparse DETR's encoder for the DINO family (the paper's "DINO + Sparse DETR" baseline): one
top-k token selection before the encoder, supervised by the decoder cross-attention map."""

from .attention_map import decoder_attention_map, sparse_keep_counts, top_count_targets
from .losses import AttentionMapLoss, EncoderAuxiliaryLoss, masked_multilabel_soft_margin_loss
from .sparse_encoder import SparseDetrEncoder

__all__ = [
    "AttentionMapLoss",
    "EncoderAuxiliaryLoss",
    "SparseDetrEncoder",
    "decoder_attention_map",
    "masked_multilabel_soft_margin_loss",
    "sparse_keep_counts",
    "top_count_targets",
]
