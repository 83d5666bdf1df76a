"""Analyze stage: CART1-versus-CART2 endpoint statistics, tables, figures, report.

Not built yet (see the analysis issue); nothing here pretends otherwise.
"""
