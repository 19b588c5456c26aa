"""What to take from a host and taking it: host facts, planning, the remote directory and
registry walks, the ``.reg`` export, the acquirer, the per-device runner and the events it reports.

May import ``collector.liveresponse``, ``collector.transfer``, ``profiles`` and ``evidence``;
nothing above (packaging, delivery, fleet, cli).
"""
