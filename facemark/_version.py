"""facemark's version, in one place: the package (``facemark.__version__``), ``facemark --version``,
checkpoints and outputs read it here, and ``pyproject.toml`` reads it for the wheel (setuptools'
dynamic version), so nothing imports the rest of the package to learn it."""

__version__ = "0.1.0"
