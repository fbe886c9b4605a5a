"""Compute kernels: attention implementations behind one dispatch function."""
