"""The layer both solvers stand on."""
