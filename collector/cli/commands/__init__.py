"""The sub-commands of ``cblr-collect``, one module per group.

Each module has ``register(commands)``, which adds its sub-parsers and sets ``handler`` on
each: a function taking the parsed arguments and returning the exit code.
"""
