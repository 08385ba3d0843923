"""The one base of every error that is the user's to fix (a leaf module: imports nothing).

``run.py``, ``sweep.py`` and the other command lines catch :class:`UserError` alone and print
it as one line (``TypeName: message``) with exit code 2, without a traceback. Each layer keeps
its own subclass (config, data, checkpoint, training divergence, report) so that a message
still says where the problem is; every one of them derives from this base.
"""


class UserError(Exception):
    """Something the user gives (config, files, environment, workdir) is wrong: one line."""
