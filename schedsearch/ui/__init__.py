"""``schedsearch ui``: a local, read-only web page over the results the CLI reads."""
