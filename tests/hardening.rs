//! Black-box regression tests for the hardening defects (being written).
