"""The one exception class for a bad input of the user.

A config value or argument, a flag, a dataset name or split, a workdir, a checkpoint that does
not fit: lazy_jax raises `InputError` with a message that names the bad value and what is
allowed. `lazy_jax.main` prints these as one line (exit 2); any other exception, a shape error
while tracing say, keeps its traceback. It subclasses ValueError so callers that catch
ValueError keep working.
"""

from __future__ import annotations


class InputError(ValueError):
    """A bad input, named in the message with what is allowed."""
