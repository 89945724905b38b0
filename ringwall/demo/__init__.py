"""Demo backend: a small fintech-style HTTP API that the gateway protects in demos and tests."""
