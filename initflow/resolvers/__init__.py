"""One module per operation: authorize, validate, call a service, map to types."""
