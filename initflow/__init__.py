"""initflow: create projects from templates with durable, observable initialization."""

__version__ = "0.1.0"
