"""Many devices in one run: the fleet runner (sessions shared under a limit, each device
collected then sealed) and the per-run log.

May import every layer below (liveresponse, transfer, acquisition, packaging); never ``cli``.
"""
