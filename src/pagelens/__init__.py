"""pagelens: serve ColPali-family embedding models."""

__version__ = "0.1.0"
