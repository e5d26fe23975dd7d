"""mab: a Thompson-sampling prediction server."""

__version__ = "0.1.0"
