"""TLS support: certificates for development (`devca`)."""
