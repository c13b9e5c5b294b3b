"""The package version, in a module of its own so that any module can record it in the files it
writes without importing the package (``import imcsim`` runs ``imcsim/__init__``, which imports
the macro: a module the macro imports would close a circle)."""
__version__ = "0.1.0"
