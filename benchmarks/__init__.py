"""gatecast benchmarks: measured side by side in one run, printed as ratios (`make bench`)."""
