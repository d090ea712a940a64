"""End-to-end tests: real initflow processes, real SIGKILL, real SQLite files."""
