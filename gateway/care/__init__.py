"""探访 (visits to elders living alone): check-ins and plans, the visit tracker and its overdue alert,
and the monthly report."""
