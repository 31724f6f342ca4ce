"""Decoding: greedy, sampled and beam search through a key/value cache, and predict/generate on top."""
