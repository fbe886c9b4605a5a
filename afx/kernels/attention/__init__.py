"""One attention entry point for all of afx.

Every attention layer calls `dot_product_attention`; configs choose the implementation with
`attention_impl`.  Layout is `jax.nn.dot_product_attention`'s: `[batch, seq, heads, head_dim]`.
"""

from afx.kernels.attention.api import IMPLEMENTATIONS, dot_product_attention

__all__ = ["IMPLEMENTATIONS", "dot_product_attention"]
