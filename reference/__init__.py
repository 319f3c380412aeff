"""Pure-torch references, one module per op: written for clarity, not speed."""
