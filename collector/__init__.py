"""The client side of cblr-collector: the Live Response API client, sessions and collection."""
