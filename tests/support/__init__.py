"""Helpers the test folders share: conformance suites, store inspection, command runners, the
moto server fixtures and fault injection. Tests import them as `support.<module>`: pytest puts
the tests folder on the import path when it loads tests/conftest.py."""
