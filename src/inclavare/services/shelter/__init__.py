"""shelter's library: reference values and their comparison (``references``), and ``mrverify``."""
