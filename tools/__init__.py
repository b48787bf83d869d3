"""One-off tools, each run from the repository root as a module: ``python -m tools.<script> --help``."""
