"""The rendering library of the command line: every image, animation and page a run exports.

:mod:`.frames` (numbered PNGs, scanline plots, GIF/MP4, the comparison figure), :mod:`.figures` (labelled tiles,
grids, the barycenter contact sheet), :mod:`.viewer` (``index.html``), :mod:`.run` (all exports of a geodesic run
directory), :mod:`.clip` (the streamed exports of an interpolated clip) and :mod:`.demo_figure` (the README figure
of the barycenter demonstrations).
"""
