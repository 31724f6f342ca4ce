"""A sweep's report: statistics over seeds and sentences, comparisons with the baseline, learning curves, tables and figures."""
