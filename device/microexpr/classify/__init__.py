"""Staged classification: FACS rules → prototypes → subject context → decision."""
