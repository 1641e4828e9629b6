"""fastgw: a fast API security gateway."""

__version__ = "0.1.0"
