"""DECTRIS EIGER2 500K at APS 3-ID-C: devices, file layout, and tools for the image chain."""

__version__ = "0.1.0"
