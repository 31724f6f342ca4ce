"""Evaluation: BLEU, the evaluators a run calls at each eval, word-vector benchmarks."""
