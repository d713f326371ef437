"""The ``dsbroker`` command line."""
