"""Named build / push / pull steps and their registry."""
