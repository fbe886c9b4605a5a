"""Audio features, file I/O and synthesis."""
