"""The package version, in a leaf module so that low layers (downloads' User-Agent, checkpoint
metadata) can read it without importing the package facade, which imports the whole engine."""
__version__ = "0.1.0"  # keep equal to pyproject.toml's version
