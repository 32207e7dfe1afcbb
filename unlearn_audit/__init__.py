"""unlearn-audit: certified machine unlearning (HF-OCU) and an audit of it.

Label convention everywhere: 1 = member (or deleted record), 0 = non-member.
"""

__version__ = "0.1.0"
