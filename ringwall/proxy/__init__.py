"""Upstream selection rules that need no sockets: load balancing and passive health."""
