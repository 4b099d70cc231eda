"""Bit-exact comparison: variables, configs and predictions; probe inputs; the
state a check may touch; the export tolerance; what a format would lose."""
