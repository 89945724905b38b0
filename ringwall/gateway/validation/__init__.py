"""Request validation: strict parsing of bodies and checks against declared schemas."""
