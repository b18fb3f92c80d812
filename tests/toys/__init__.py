"""Plug-ins that exist only in the tests: each is one module, registered by the test with one line."""
