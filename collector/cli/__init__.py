"""The command line: argument parsing, the sub-commands, progress renderers, the summary,
exit codes, device lists and the demo.

The top layer: it may import every other layer; nothing imports it.
"""
