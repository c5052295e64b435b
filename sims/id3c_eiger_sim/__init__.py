"""A caproto soft IOC that serves the ADEiger + NDFileHDF5 PV surface and writes EIGER files."""
