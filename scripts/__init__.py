"""Command line, exports and plots of the elpips toolkit."""
