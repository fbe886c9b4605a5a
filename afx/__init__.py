"""afx: audio transformer systems in JAX/Flax."""

from afx.errors import AudioError, ConfigError, DataError, NonFiniteLossError, UserError

__version__ = "0.1.0"

__all__ = ["AudioError", "ConfigError", "DataError", "NonFiniteLossError", "UserError"]
