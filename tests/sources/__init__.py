"""Tests of the source backends; `contract.py` is the suite every backend passes."""
