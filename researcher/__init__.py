"""The researcher's command line: run goals, follow them, read reports, export artifacts."""
