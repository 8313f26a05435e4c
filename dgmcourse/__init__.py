"""dgmcourse: helper library of an open course on deep generative models.

One module per topic; notebooks import from here. See the README for the map.
"""

__version__ = "0.1.0"
