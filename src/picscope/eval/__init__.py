"""Evaluation harness: datasets (our folder format + loaders for public benchmarks), metrics, simulated users,
runs with caching, and readable reports. See docs/evaluation.md."""
