"""The study's tables from the run folders: selection of runs, aggregates over seeds, conflict tables, statistics, the README's findings, Markdown output."""
