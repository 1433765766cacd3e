"""Fuzzing the feed path: the check shared by the hypothesis tests and the atheris target."""
