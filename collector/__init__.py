"""The client side of cblr-collector: the Live Response API client, sessions and collection."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cblr-collector")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
