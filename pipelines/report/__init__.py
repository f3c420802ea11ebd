"""The report: comparison, statistics, verdicts, multiple testing, tables, charts, the page."""
