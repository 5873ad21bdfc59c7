"""compete: landmark image retrieval, from a folder of photos to a scored submission."""

__version__ = "0.1.0"
