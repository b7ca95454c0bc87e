"""Pure Python + Gymnasium: the live environments, their spaces and monitors.

Nothing in this package imports Django or DRF; settings arrive as arguments.
"""
