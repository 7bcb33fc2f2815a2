"""Workers: claim runs from a pool and execute them."""
