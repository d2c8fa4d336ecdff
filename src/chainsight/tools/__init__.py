"""The tools: the ``chainsight`` command line, triage, SLO rules, the demo and the prices CLI.

Never imported by the request path. ``chainsight slo`` needs the ``chainsight[tools]`` extra
(PyYAML); the other commands run on the core install.
"""
