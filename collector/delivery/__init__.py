"""Sealed evidence to the lab and to legal-hold storage: destinations (S3, SFTP) behind one
small interface, resumable uploads whose state survives kill -9, and the signed ``delivered``
custody event once the remote end confirms the bytes.

May import every layer below (liveresponse, transfer, acquisition, packaging) and ``evidence``;
nothing above (fleet, cli).
"""
