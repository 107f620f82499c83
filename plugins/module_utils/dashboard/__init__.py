"""The run's live dashboard (``server``: a loopback HTTP server for the page and the run's
status; ``timeline``: the workers' timeline from the ledger; ``report``: the same page as one
self-contained HTML file at the end). The page and its vendored chart library are ``assets/``."""
