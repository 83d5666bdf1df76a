"""SQL owned by the extract stage (a package so importlib.resources finds it)."""
