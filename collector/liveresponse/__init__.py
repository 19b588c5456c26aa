"""The Live Response API itself: the HTTP client, sessions, the dialect table, wire models,
errors with HRESULT names, credentials, and running a program on the endpoint.

The lowest layer of ``collector``: it imports nothing from the layers above it (transfer,
acquisition, packaging, fleet, cli), only the standard library and third-party packages.
"""
