"""Terminal clients of the public API: `initflow create` and `initflow watch`."""
