"""Views: pictures and pages made from codes and runs.

- :mod:`~deephash.views.viz`: the neighbour grid (queries and their nearest items, drawn) and the figure
  helpers the report uses.
- :mod:`~deephash.views.report`: ``deephash report``, one self-contained HTML page about runs.
"""
