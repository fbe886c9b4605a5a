"""Task families: losses, metrics and evaluation."""
