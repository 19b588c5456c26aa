"""Moving bytes durably: the chunk engine, the journal, staging, observations of remote
files, source-side hashing, and the per-device workspace that holds them.

May import ``collector.liveresponse`` and ``evidence``; nothing above (acquisition,
packaging, delivery, fleet, cli).
"""
