"""Use cases: the one layer the API, the CLI and the workers all call."""
