"""Applications: end-to-end programs built on the library layers (they may use any of them).

- :mod:`~dhian.apps.quickstart` — ``dhian quickstart``: fetch a corpus, train a small
  attention translator for a fixed time, evaluate it and write a report;
- :mod:`~dhian.apps.report` — a run report as Markdown + one self-contained HTML page.
"""
