"""Better than the reference: test-time ensembles, seamless high-resolution tiles, flicker-free video."""
