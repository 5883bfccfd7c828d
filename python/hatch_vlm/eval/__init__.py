"""Evaluation: answer extraction and scoring (answers.py), benchmark categories and the paper-style
results table (table.py), and generation over a benchmark (run.py)."""
