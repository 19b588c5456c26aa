"""From a collected workspace to sealed evidence: the evidence folder, sealing, and
sealing while collecting.

May import the layers below (liveresponse, transfer, acquisition), ``profiles`` and
``evidence``; nothing above (fleet, cli).
"""
