"""Benchmarks: search quality against a tuned baseline grid, and trainer-side overhead.

``python -m schedsearch.bench --profile quick|full --out DIR`` plans the runs, caches each finished
run under ``DIR/runs`` (a re-run skips it), and writes ``report.json``, ``report.md`` and plots.
Benchmarks are a command that writes a report, not timed tests.
"""
