"""Caller authentication: API keys, and bearer tokens (JWK sets, JWS signatures, JWT claims).

Verification does no I/O. Callers pass in key sets, token bytes and the
current time, so every rule can be tested without a network or a clock.
"""
