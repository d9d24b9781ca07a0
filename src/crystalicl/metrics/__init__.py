"""Metrics of generated crystals: validity, coverage, property distributions, conditional success, realism."""
