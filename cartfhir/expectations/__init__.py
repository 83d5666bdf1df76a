"""Expectations stage: Great Expectations suites over the cohort tables.

Not built yet (see the expectations issue); nothing here pretends otherwise.
"""
