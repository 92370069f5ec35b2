"""Small dependency-free pieces that every stage shares (numpy and the standard library only).

`extract/`, `heads/` and `pipelines/` may all import `core`; `core` imports none of them, so the one
definition of a box IoU, a timestamp key or an atomic file write lives here and nowhere else.
"""
