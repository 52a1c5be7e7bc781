"""Evaluation of trained models: sequence metrics (metrics), PNG plots (plots) and the report (report).

The command line is ``python -m protlig_dd.evaluate``; see protlig_dd.evaluation.report for what each
number of the report means and which ones are approximate.
"""
