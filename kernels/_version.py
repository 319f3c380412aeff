"""The library version (its own module: autotune.store records it without importing the package)."""
__version__ = "0.1.0"
