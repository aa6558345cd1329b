"""propstream: streaming propensity scoring (application layer: CLI and demo)."""
