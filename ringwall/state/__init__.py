"""Shared state stores: the embedded shared-memory store and Redis."""
