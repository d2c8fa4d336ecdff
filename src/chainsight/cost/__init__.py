"""Cost: the price table and budgets (in-process and Redis)."""
