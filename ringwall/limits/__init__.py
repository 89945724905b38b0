"""Rate arithmetic: values in, decisions out, no I/O."""
