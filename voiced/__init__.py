"""voiced: a private, local voice assistant for the Linux desktop."""

__version__ = "0.1.0"
