"""Membership-inference attacks, usable on their own (no dependency on ``unlearn_audit``).

Label convention: 1 = member (or deleted record), 0 = non-member. Higher score = more likely member.
"""
