"""Caller authentication: API keys, bearer tokens (JWK sets, JWS, JWT) and client certificates.

Verification does no I/O. Callers pass in key sets, token bytes and the
current time, so every rule can be tested without a network or a clock.
"""
