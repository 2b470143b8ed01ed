"""The ``earthloc`` command line: thin Typer wrappers over the Python API, one module per stage."""
