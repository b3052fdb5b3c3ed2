"""Runs of many cases: the batch plan, one case with its files and run record, the child process, Dask."""
