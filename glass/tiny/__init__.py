"""Tiny random-weight models built from configs for the CPU configuration and tests."""
