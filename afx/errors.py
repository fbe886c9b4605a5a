"""afx's own exception types.

A ``UserError`` is a mistake the user can fix (a bad config key, an unreadable file, a batch size
that does not divide over the devices).  Its message is one line that names the file or key and
the fix; ``run.py`` prints it without a traceback and exits with status 2.
"""


class UserError(Exception):
  """A mistake in the user's input, reported as one line naming the file or key and the fix."""


class ConfigError(UserError):
  """A bad configuration: unknown key, wrong type, impossible combination."""


class AudioError(UserError):
  """An audio file that cannot be used: unreadable, truncated, empty or non-finite."""


class DataError(UserError):
  """A dataset that cannot be built or read: missing directory, bad labels file, empty split."""


class NonFiniteLossError(Exception):
  """Training produced a NaN or infinite loss; the last good checkpoint is left intact."""
