"""Benchmarks that measure sweep side by side with the peer a user would otherwise pick.

Run them with ``make bench``; each prints its ratios and writes ``bench-results/<name>.json``.
"""
