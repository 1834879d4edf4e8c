"""The one exception type that means "the user asked for something we cannot do"."""


class UserError(ValueError):
  """Bad input (config, path, checkpoint): `launch.py` prints the message on one line, exits 2.

  The message names the problem and the fix, e.g.
  "config.batch_size=10 is not divisible by the 4 devices: set --config.batch_size to a multiple of 4".
  """
