"""Reusable linen layers: attention, transformer blocks, pooling, front ends."""

from afx.layers.attention import MultiHeadAttention
from afx.layers.frontends import PatchFrontEnd
from afx.layers.pooling import average_pool_time, wavelet_pool
from afx.layers.transformer import MlpBlock, TransformerBlock
from afx.layers.two_d_attention import TwoDAttention

__all__ = ["MlpBlock", "MultiHeadAttention", "PatchFrontEnd", "TransformerBlock", "TwoDAttention",
           "average_pool_time", "wavelet_pool"]
