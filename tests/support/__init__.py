"""Test helpers: servers hosted in background threads for synchronous tests."""
