"""The command line: ``blackhole-sync``."""

from .main import EXIT_FAILURE, EXIT_OK, EXIT_SECURITY, EXIT_USAGE, main

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_SECURITY", "EXIT_USAGE", "main"]
