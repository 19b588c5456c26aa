"""A stand-in for the Cb Defense cloud and its Windows endpoints.

The emulator serves the Live Response API (``protocol.py`` holds its names) over aiohttp.web,
from a scenario (``scenario.py``) that describes tokens, devices, their files, registry,
processes and link model, with seeded fault injection (``faults.py``).
"""
