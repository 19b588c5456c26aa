"""Exit codes of ``cblr-collect`` (DESIGN.md)."""

from __future__ import annotations

EXIT_OK = 0
"""Everything asked for was collected (or verified)."""
EXIT_PARTIAL = 1
"""Finished, but some artifacts failed and are recorded as failed (or verification failed)."""
EXIT_USAGE = 2
"""Bad usage, profile or configuration."""
EXIT_UNREACHABLE = 3
"""Could not reach or authenticate to the server, or the session could not be established."""
EXIT_SIGNER_UNVERIFIED = 4
"""``verify``/``unseal``: every check holds, but no trusted key was given, so who signed is
unverified (``evidence.verify.EXIT_SIGNER_UNVERIFIED``)."""
EXIT_WRONG_KEY = 5
"""``verify``/``unseal``: the key or passphrase given does not open this archive (which itself
matches its sealed record): try the right one (``evidence.verify.EXIT_WRONG_KEY``)."""
EXIT_PIPE_CLOSED = 141
"""The reader of the output closed it (``... | head``); 128 + SIGPIPE, as a shell reports a
command that SIGPIPE ended. The work itself was done; only its output was cut."""
EXIT_INTERRUPTED = 130
"""Interrupted by Ctrl-C (SIGINT; 128 + 2, as shells report it): what was collected is kept,
the sessions are closed, and ``cblr-collect resume WORKSPACE`` finishes the run."""
EXIT_TERMINATED = 143
"""Stopped by SIGTERM (128 + 15; a service manager, ``kill``): resumable, as for 130."""

EXIT_CODES_HELP = """exit codes:
  0    everything asked for was collected (or verified)
  1    some artifacts or devices failed (recorded as failed), or the disk filled up
  2    bad usage, profile or configuration, or a folder it cannot write in
  3    the server could not be reached or refused the token, or no session started
  130  interrupted (Ctrl-C); resumable with: cblr-collect resume WORKSPACE
  141  the reader of the output closed the pipe (... | head)
  143  terminated (SIGTERM); resumable the same way
"""
