"""Experiments built on the metric: training its linear weights on 2AFC judgements."""
