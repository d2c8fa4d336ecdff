"""The request path: stages and requests, from the decorator to the finished span.

Never imports ``chainsight.config.configure`` or ``chainsight.tools``; see docs/architecture.md.
"""
