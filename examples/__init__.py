"""Runnable examples of using the mesh; `python -m examples.demo` is what `make demo` runs."""
