"""The fuzz suite's machinery: request strategies from descriptors, the in-process mesh, generic
calls and the report (tests/fuzz holds the tests)."""
