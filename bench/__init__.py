"""Benchmarks and the model report: scripts run as `python -m bench.<name>`; results in bench/results/."""
