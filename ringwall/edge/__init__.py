"""Edge layer: checks on the client connection, before any credential is read."""
