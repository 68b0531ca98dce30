"""Teaching: the tour's helpers (``00_tour``) and the course kit's checks (``05_exercises``).

The top layer: it uses the method, training, analysis and figures below it, and nothing below imports it.
"""
