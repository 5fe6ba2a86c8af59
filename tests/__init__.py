"""The test suite: ``test_*.py`` modules, their fixtures in ``conftest.py`` and the helpers they
share in :mod:`tests.support`."""
