"""``telemon report``: one self-contained HTML file of what a deployment (or an evaluation) did.

Two steps: :mod:`.collect` reads a deployment's topics and registry over a time range into plain
records (:mod:`.records`, recovering per-reading scores by a replay of the selected devices), and
:mod:`.render` turns those records into an HTML string whose plots are inline SVG (:mod:`.figures`):
no script, no font, nothing to fetch. :mod:`.evaluation` renders the output of
``telemon evaluate`` the same way.
"""
