"""Gateway layer: routing now; authentication, authorization and per-caller limits later."""
