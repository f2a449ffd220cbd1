"""Quarantine: samples and windows held out of learning, and the operators' decisions on them."""
