"""Analysis of trained models: attention statistics and attention-map figures."""
