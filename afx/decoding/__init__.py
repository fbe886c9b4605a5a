"""Decoding on the device: CTC (`afx.decoding.ctc`)."""

from afx.decoding import ctc

__all__ = ["ctc"]
