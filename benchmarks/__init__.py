"""Benchmarks that print figures (`python -m benchmarks`); nothing here is a test."""
