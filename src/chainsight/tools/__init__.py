"""The tools: the ``chainsight`` command line, triage, SLO rules, the demo and the prices CLI.

Never imported by the request path; they need the ``chainsight[tools]`` extra.
"""
