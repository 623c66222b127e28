"""The studies shipped with probing: one analysis per file, plus run specs (``*.toml``).

Installed as ``probing.analyses``; the registry (:mod:`probing.run.registry`) loads each file by
path, so the files are read like a paper's method section, not imported as a library.
"""
