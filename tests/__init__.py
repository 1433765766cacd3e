"""The test suite; a package so that tests can import the local servers."""
