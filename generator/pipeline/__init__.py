"""The build's pipeline: plan the jobs, run them (here or on Dask), write their outputs, report."""
