"""The ``imcsim`` command line. Library code never imports this package."""
from imcsim.cli.main import main

__all__ = ["main"]
