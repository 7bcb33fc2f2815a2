"""The package version (its own module, so any layer can read it without importing the
package's public table)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
