"""Benchmarks that print tables (results in bench/results/) and the scripts that fit shipped constants.

Run from the repository root. Scripts that share code import it from this package
(``bench/calibration.py``) and are run as modules, e.g. ``python -m bench.fit_detector_calibration``;
the others also run as plain scripts (``python bench/compare_baselines.py``). Nothing edits ``sys.path``.
"""
