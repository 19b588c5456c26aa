"""The Live Response API itself: the HTTP client, sessions, the dialect table, wire models,
errors with HRESULT names, credentials, running a program on the endpoint, and remote text
made safe to show (remotetext).

The lowest layer of ``collector``: it imports nothing from the layers above it (transfer,
acquisition, packaging, delivery, fleet, cli), only the standard library and third-party packages.
"""
