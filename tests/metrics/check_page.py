"""Parses a metrics page from standard input with the prometheus_client parsers.

Usage: check_page.py text|openmetrics < page

`text`: the Prometheus text format 0.0.4 parser, and no family may appear twice (a gauge `x`
next to a counter `x_total` would). `openmetrics`: the OpenMetrics parser, which is strict
(`# EOF`, counter families without `_total`, no clashing names). Prints `family type samples`
lines for the test to check; exits non-zero with the parser's message on the first error.
"""

import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as prometheus

page = sys.stdin.read()
parse = {"text": prometheus, "openmetrics": openmetrics}[sys.argv[1]]
families = list(parse(page))
names = [f.name for f in families]
duplicates = sorted({n for n in names if names.count(n) > 1})
if duplicates:
    sys.exit(f"families named twice: {duplicates}")
for family in families:
    print(family.name, family.type, len(family.samples))
