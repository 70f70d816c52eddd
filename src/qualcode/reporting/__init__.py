"""Reporting: the report, its pages, and the methods paragraph written from the run's results."""
